"""bench/stall_watch.py: which stamped events a machine stall crossed (the bench judges the
"no event held back" target on the others, so this must not let a late event slip through)."""
from __future__ import annotations

import random

import pytest

from bench.stall_watch import clear_transits_ms, stalls_crossed, stalls_within

MS = 1_000_000


@pytest.mark.parametrize(("event", "crossed"), [
    ((0, 1 * MS - 1), False),           # over just before the stall began
    ((0, 1 * MS), True),                # arrives the instant the stall begins
    ((2 * MS, 3 * MS), True),           # sent and arrived inside it
    ((4 * MS, 6 * MS), True),           # sent the instant it ends
    ((5 * MS, 9 * MS), True),           # spans the second stall whole
    ((4 * MS + 1, 5 * MS - 1), False),  # between the two stalls
    ((20 * MS, 21 * MS), False),        # after both
])
def test_an_event_is_crossed_when_a_stall_overlaps_it(event: tuple[int, int], crossed: bool) -> None:
    stalls = [[6 * MS, 7 * MS], [1 * MS, 4 * MS]]  # unsorted on purpose
    assert stalls_crossed([list(event)], stalls) == [crossed]


def test_a_long_stall_that_began_well_before_the_event_still_crosses_it() -> None:
    stalls = [[0, 50 * MS], [49 * MS, 49 * MS + 10]]
    assert stalls_crossed([[40 * MS, 41 * MS]], stalls) == [True]


def test_agrees_with_checking_every_stall() -> None:
    rng = random.Random(7)
    stalls = [[start, start + rng.randrange(1, 5 * MS)] for start in (rng.randrange(0, 1000 * MS) for _ in range(60))]
    events = [[sent, sent + rng.randrange(0, 3 * MS)] for sent in (rng.randrange(0, 1000 * MS) for _ in range(2000))]
    naive = [any(start <= arrived and end >= sent for start, end in stalls) for sent, arrived in events]
    assert stalls_crossed(events, stalls) == naive
    assert 0 < sum(naive) < len(events)


def test_clear_transits_keep_only_the_events_no_stall_crossed() -> None:
    events = [[0, 1 * MS], [10 * MS, 17 * MS], [30 * MS, 32 * MS]]
    assert clear_transits_ms(events, [[12 * MS, 15 * MS]]) == [1.0, 2.0]
    assert clear_transits_ms(events, []) == [1.0, 7.0, 2.0]


def test_stalls_within_count_those_overlapping_the_run() -> None:
    events = [[10 * MS, 11 * MS], [20 * MS, 22 * MS]]
    stalls = [[0, 5 * MS], [9 * MS, 10 * MS], [15 * MS, 16 * MS], [22 * MS, 23 * MS], [30 * MS, 31 * MS]]
    assert stalls_within(events, stalls) == 3
    assert stalls_within([], stalls) == 0
