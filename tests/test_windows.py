"""antex.windows: rolling sums, percentages, statuses, release times and schedules, no server.

A charge made at `ts` counts in a window of W seconds while ts > now - W: it stops counting
exactly W after it happened. Amounts are integer micro-credits.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antex.windows import (
    FIVE_HOURS_S,
    SEVEN_DAYS_S,
    RollingWindow,
    available_at,
    format_wait,
    leaves_at,
    percent,
    status_for,
    view,
)

NOW = 1_764_000_000.0
LIMIT = 1_000_000  # one credit, in micro-credits
SETTINGS = settings(deadline=None, database=None, max_examples=200)
BOTH_WINDOWS = pytest.mark.parametrize("window_s", [FIVE_HOURS_S, SEVEN_DAYS_S], ids=["5h", "7d"])


def counted(charges: list[tuple[float, int]], now: float, window_s: int) -> int:
    """The definition, by brute force: the amounts of the charges with ts > now - W."""
    return sum(amount for ts, amount in charges if ts > now - window_s)


# RollingWindow


@BOTH_WINDOWS
@pytest.mark.parametrize("past_w_s", [-1, -0.001, 0, 0.001], ids=["W-1", "W-0.001", "W", "W+0.001"])
def test_a_charge_stops_counting_exactly_w_after_it_happened(window_s: int, past_w_s: float) -> None:
    now = NOW + window_s + past_w_s
    still_counts = past_w_s < 0
    window = RollingWindow(window_s, [(NOW, 5)])
    assert window.expire(now) == counted([(NOW, 5)], now, window_s) == (5 if still_counts else 0)
    assert len(window.charges) == (1 if still_counts else 0)
    shown = view("w", [(NOW, 5)], now=now, window_s=window_s, limit=LIMIT)
    assert (shown.resets_at is not None) == still_counts


def test_expire_drops_only_what_left_and_keeps_the_exact_sum() -> None:
    window = RollingWindow(100, [(10.0, 1), (20.0, 20), (30.5, 300), (40.0, 4000)])
    assert window.total == 4321
    assert window.expire(110.0) == 4320  # ts 10 leaves at 110 exactly
    assert window.expire(130.5) == 4000  # ts 20 and ts 30.5 are both gone
    assert list(window.charges) == [(40.0, 4000)]
    assert window.expire(140.0) == 0
    assert not window.charges


def test_out_of_order_add_keeps_oldest_first() -> None:
    window = RollingWindow(100)
    for ts, amount in [(30.0, 3), (10.0, 1), (20.0, 2), (5.0, 7)]:
        window.add(ts, amount)
    assert list(window.charges) == [(5.0, 7), (10.0, 1), (20.0, 2), (30.0, 3)]
    assert window.expire(110.0) == 5  # 5.0 and 10.0 left, in that order
    assert list(window.charges) == [(20.0, 2), (30.0, 3)]


@pytest.mark.parametrize("amount", [0, -5])
def test_zero_and_negative_amounts_are_not_charges(amount: int) -> None:
    window = RollingWindow(100, [(10.0, amount)])
    assert window.total == 0
    assert not window.charges


charge_lists = st.lists(
    st.tuples(st.floats(0, 1_000, allow_nan=False).map(lambda t: round(t, 3)), st.integers(1, 10**9)),
    max_size=40,
)


@SETTINGS
@given(charges=charge_lists, nows=st.lists(st.floats(0, 1_200, allow_nan=False), max_size=10), window_s=st.sampled_from([1, 50, 300]))
def test_rolling_sum_equals_brute_force(charges: list[tuple[float, int]], nows: list[float], window_s: int) -> None:
    """Charges added in any order, expired at rising times: the sum is the definition's, exactly."""
    window = RollingWindow(window_s)
    added: list[tuple[float, int]] = []
    steps = sorted(nows)
    for index, (ts, amount) in enumerate(charges):
        window.add(ts, amount)
        added.append((ts, amount))
        if steps and index % 3 == 2:
            now = steps.pop(0)
            assert window.expire(now) == counted(added, now, window_s)
    for now in steps:
        assert window.expire(now) == counted(added, now, window_s)
    assert [ts for ts, _ in window.charges] == sorted(ts for ts, _ in window.charges)


# percent and status


@pytest.mark.parametrize(
    "used, expected_percent, expected_status",
    [
        (0, 0.0, "allowed"),
        (799_900, 79.99, "allowed"),
        (799_999, 79.99, "allowed"),  # 79.9999 %: not yet 80 %, so not shown as 80
        (800_000, 80.0, "allowed_warning"),
        (999_999, 99.99, "allowed_warning"),  # not yet full, so not shown as 100
        (1_000_000, 100.0, "rejected"),
        (1_500_000, 150.0, "rejected"),
    ],
)
def test_percent_and_status_thresholds(used: int, expected_percent: float, expected_status: str) -> None:
    assert percent(used, LIMIT) == expected_percent
    assert status_for(used, LIMIT) == expected_status
    shown = view("five_hour", [(NOW - 60, used)] if used else [], now=NOW, window_s=FIVE_HOURS_S, limit=LIMIT)
    assert (shown.used_percent, shown.status) == (expected_percent, expected_status)


@SETTINGS
@given(limit=st.integers(1, 10**12), share=st.sampled_from([0, 50, 80, 100, 150]) | st.integers(0, 300),
       nudge=st.integers(-3, 3))
def test_the_shown_percent_never_claims_a_threshold_the_status_has_not_reached(limit: int, share: int, nudge: int) -> None:
    used = max(0, limit * share // 100 + nudge)
    shown, status = percent(used, limit), status_for(used, limit)
    assert (shown >= 100.0) == (status == "rejected")
    assert (80.0 <= shown < 100.0) == (status == "allowed_warning")
    assert abs(shown - 100.0 * used / limit) < 0.01 + 1e-9


# view: resets_at, available_at


def test_empty_window() -> None:
    shown = view("five_hour", [], now=NOW, window_s=FIVE_HOURS_S, limit=LIMIT)
    assert (shown.used_percent, shown.status, shown.resets_at, shown.available_at, shown.schedule) == (
        0.0, "allowed", None, None, ())


def test_resets_at_is_when_the_oldest_in_window_charge_leaves() -> None:
    charges = [
        (NOW - FIVE_HOURS_S, 400_000),  # exactly W old: already out, ignored
        (NOW - 100.4, 100_000),  # the oldest that counts
        (NOW - 10, 100_000),
    ]
    shown = view("five_hour", charges, now=NOW, window_s=FIVE_HOURS_S, limit=LIMIT)
    assert shown.used_percent == 20.0
    assert shown.resets_at == math.ceil(NOW - 100.4 + FIVE_HOURS_S) == int(NOW) - 100 + FIVE_HOURS_S
    assert shown.available_at is None  # not full


def test_zero_credit_events_do_not_set_the_next_release() -> None:
    """A request charged nothing frees nothing when it ages out (the database keeps such events)."""
    charges = [(NOW - 500, 0), (NOW - 100, 300_000)]
    shown = view("five_hour", charges, now=NOW, window_s=FIVE_HOURS_S, limit=LIMIT)
    assert shown.resets_at == leaves_at(NOW - 100, FIVE_HOURS_S)
    assert shown.schedule == ((leaves_at(NOW - 100, FIVE_HOURS_S), 0.0),)


@pytest.mark.parametrize(
    "amounts, leaving",
    [
        ([1_000_000], 0),  # exactly full: the one charge must leave
        ([500_000, 500_000], 0),  # exactly full: the oldest leaving is enough
        ([600_000, 300_000, 200_000], 0),  # 110 % -> 50 % when the oldest leaves
        ([100_000, 100_000, 1_000_000], 2),  # 120 % -> 110 % -> 100 % (still full) -> 0 %
        ([50_000, 950_000, 100_000], 1),  # 110 % -> 105 % -> 10 %
    ],
)
def test_available_at_is_when_exactly_enough_old_charges_have_left(amounts: list[int], leaving: int) -> None:
    charges = [(NOW - 3600 + 0.5 + 60 * i, amount) for i, amount in enumerate(amounts)]
    shown = view("five_hour", charges, now=NOW, window_s=FIVE_HOURS_S, limit=LIMIT)
    assert shown.status == "rejected"
    expected = leaves_at(charges[leaving][0], FIVE_HOURS_S)
    assert shown.available_at == expected
    assert counted(charges, expected, FIVE_HOURS_S) < LIMIT <= counted(charges, expected - 1, FIVE_HOURS_S)


def test_available_at_is_none_below_100_percent() -> None:
    assert available_at([(NOW, 999_999)], 999_999, FIVE_HOURS_S, LIMIT) is None


# schedule


def test_schedule_steps_down_as_each_charge_leaves() -> None:
    charges = [(NOW - 7200, 500_000), (NOW - 3600, 250_000), (NOW - 60.5, 250_000)]
    shown = view("five_hour", charges, now=NOW, window_s=FIVE_HOURS_S, limit=LIMIT)
    assert shown.schedule == (
        (int(NOW) - 7200 + FIVE_HOURS_S, 50.0),
        (int(NOW) - 3600 + FIVE_HOURS_S, 25.0),
        (int(NOW) - 60 + FIVE_HOURS_S, 0.0),
    )
    assert shown.to_json()["schedule"][0] == {"at": int(NOW) - 7200 + FIVE_HOURS_S, "used_percent": 50.0}


def test_charges_leaving_in_the_same_second_make_one_step() -> None:
    charges = [(NOW - 100.7, 300_000), (NOW - 100.2, 300_000)]
    shown = view("five_hour", charges, now=NOW, window_s=FIVE_HOURS_S, limit=LIMIT)
    assert shown.schedule == ((int(NOW) - 100 + FIVE_HOURS_S, 0.0),)


@BOTH_WINDOWS
def test_a_busy_window_schedule_is_bucketed_to_a_chart_sized_list(window_s: int) -> None:
    step = window_s / 5000
    charges = [(NOW - window_s + step * (i + 1), 1_000) for i in range(5000)]
    shown = view("w", charges, now=NOW, window_s=window_s, limit=LIMIT, max_points=120)
    assert len(charges) == 5000
    assert 100 <= len(shown.schedule) <= 121
    assert shown.schedule[-1] == (leaves_at(charges[-1][0], window_s), 0.0)
    assert shown.schedule[0][1] < shown.used_percent == 500.0


@SETTINGS
@given(
    offsets=st.lists(st.tuples(st.floats(0, 0.999999, allow_nan=False), st.integers(1, 400_000)), min_size=1, max_size=60),
    max_points=st.integers(1, 30),
    window_s=st.sampled_from([FIVE_HOURS_S, SEVEN_DAYS_S]),
)
def test_schedule_points_are_exact_monotonic_and_bounded(
    offsets: list[tuple[float, int]], max_points: int, window_s: int
) -> None:
    charges = sorted((NOW - window_s * fraction, amount) for fraction, amount in offsets)
    shown = view("w", charges, now=NOW, window_s=window_s, limit=LIMIT, max_points=max_points)
    times = [at for at, _ in shown.schedule]
    percents = [pct for _, pct in shown.schedule]
    assert len(shown.schedule) <= max_points + 1
    assert times == sorted(set(times)) and times[0] > NOW
    assert percents == sorted(percents, reverse=True)
    assert shown.schedule[-1] == (leaves_at(charges[-1][0], window_s), 0.0)
    for at, pct in shown.schedule:  # each step is what the window will truly be at that second
        assert pct == percent(counted(charges, at, window_s), LIMIT)
    assert shown.resets_at == min(leaves_at(ts, window_s) for ts, _ in charges)
    if shown.status == "rejected":
        assert counted(charges, shown.available_at, window_s) < LIMIT <= counted(charges, shown.available_at - 1, window_s)
    else:
        assert shown.available_at is None


def test_the_5h_and_7d_windows_see_the_same_charges_differently() -> None:
    charges = [(NOW - 2 * 86400, 600_000), (NOW - 6 * 3600, 200_000), (NOW - 3600, 300_000)]
    five = view("five_hour", charges, now=NOW, window_s=FIVE_HOURS_S, limit=LIMIT)
    seven = view("seven_day", charges, now=NOW, window_s=SEVEN_DAYS_S, limit=LIMIT)
    assert (five.used_percent, five.resets_at) == (30.0, int(NOW) - 3600 + FIVE_HOURS_S)
    assert (seven.used_percent, seven.status, seven.resets_at) == (110.0, "rejected", int(NOW) - 2 * 86400 + SEVEN_DAYS_S)
    assert seven.available_at == seven.resets_at
    assert seven.to_json()["window_seconds"] == 604_800 and five.to_json()["window_seconds"] == 18_000


# format_wait


@pytest.mark.parametrize(
    "seconds, text",
    [
        (-5, "0s"),
        (0, "0s"),
        (0.2, "1s"),
        (45, "45s"),
        (59.5, "1m"),
        (61, "1m 1s"),
        (720, "12m"),
        (3600, "1h 0m"),
        (4320, "1h 12m"),
        (4359, "1h 12m"),
        (86400, "1d 0h"),
        (2 * 86400 + 3 * 3600 + 59, "2d 3h"),
    ],
)
def test_format_wait(seconds: float, text: str) -> None:
    assert format_wait(seconds) == text
