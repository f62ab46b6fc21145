"""antex.windows: rolling sums, percentages, statuses, release times and schedules, no server.

A charge made at `ts` counts in a window of W seconds while ts > now - W: it stops counting
exactly W after it happened. Amounts are integer micro-credits.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antex import windows as windows_module
from antex.windows import (
    FIVE_HOURS_S,
    SCHEDULE_POINTS,
    SEVEN_DAYS_S,
    RollingWindow,
    WindowView,
    both_windows,
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


def view_of(charges: list[tuple[float, int]], window_s: int, max_points: int = SCHEDULE_POINTS, *,
            now: float = NOW, limit: int = LIMIT) -> WindowView:
    """The report of a window holding `charges`, at `now`."""
    return view("w", RollingWindow(window_s, charges, points=max_points), now=now, limit=limit)


def naive_view(charges: list[tuple[float, int]], *, now: float, window_s: int, limit: int, max_points: int) -> WindowView:
    """The report by its definition, walking every charge: what RollingWindow's slices must equal."""
    live = sorted((ts, amount) for ts, amount in charges if ts > now - window_s and amount > 0)
    used = sum(amount for _, amount in live)
    ready, left = None, used
    if used >= limit:
        for ts, amount in live:
            left -= amount
            if left < limit:
                ready = leaves_at(ts, window_s)
                break
    slice_s, steps, left = window_s / max_points, [], used
    for ts, amount in live:
        left -= amount
        at = leaves_at(ts, window_s)
        if steps and int(steps[-1][0] // slice_s) == int(at // slice_s):
            steps[-1] = (at, percent(left, limit))
        else:
            steps.append((at, percent(left, limit)))
    return WindowView("w", window_s, percent(used, limit), status_for(used, limit),
                      leaves_at(live[0][0], window_s) if live else None, ready, tuple(steps))


# RollingWindow


@BOTH_WINDOWS
@pytest.mark.parametrize("past_w_s", [-1, -0.001, 0, 0.001], ids=["W-1", "W-0.001", "W", "W+0.001"])
def test_a_charge_stops_counting_exactly_w_after_it_happened(window_s: int, past_w_s: float) -> None:
    now = NOW + window_s + past_w_s
    still_counts = past_w_s < 0
    window = RollingWindow(window_s, [(NOW, 5)])
    assert window.expire(now) == counted([(NOW, 5)], now, window_s) == (5 if still_counts else 0)
    assert len(window) == (1 if still_counts else 0)
    assert (view_of([(NOW, 5)], window_s, now=now).resets_at is not None) == still_counts


def test_expire_drops_only_what_left_and_keeps_the_exact_sum() -> None:
    window = RollingWindow(100, [(10.0, 1), (20.0, 20), (30.5, 300), (40.0, 4000)])
    assert window.total == 4321
    assert window.expire(110.0) == 4320  # ts 10 leaves at 110 exactly
    assert window.expire(130.5) == 4000  # ts 20 and ts 30.5 are both gone
    assert list(window) == [(40.0, 4000)]
    assert window.expire(140.0) == 0
    assert not len(window)


def test_out_of_order_add_keeps_oldest_first() -> None:
    window = RollingWindow(100)
    for ts, amount in [(30.0, 3), (10.0, 1), (20.0, 2), (5.0, 7)]:
        window.add(ts, amount)
    assert list(window) == [(5.0, 7), (10.0, 1), (20.0, 2), (30.0, 3)]
    assert window.expire(110.0) == 5  # 5.0 and 10.0 left, in that order
    assert list(window) == [(20.0, 2), (30.0, 3)]


@pytest.mark.parametrize("amount", [0, -5])
def test_zero_and_negative_amounts_are_not_charges(amount: int) -> None:
    window = RollingWindow(100, [(10.0, amount)])
    assert window.total == 0
    assert not len(window)


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
    assert [ts for ts, _ in window] == sorted(ts for ts, _ in window)


def test_charges_in_the_same_second_each_leave_exactly_w_after_they_happened() -> None:
    window = RollingWindow(50)
    window.add(0.1, 1)
    window.add(0.5, 2)
    assert window.expire(50.1) == 2  # the first left at 50.1, not with the second at 50.5
    assert window.expire(50.5) == 0


@SETTINGS
@given(
    steps=st.lists(st.one_of(
        st.tuples(st.just("add"), st.floats(0, 3, allow_nan=False), st.integers(-2, 400_000)),
        st.tuples(st.just("view"), st.floats(0, 2, allow_nan=False), st.integers(1, 2_000_000)),
    ), max_size=80),
    window_s=st.sampled_from([1, 7, 60]),
    max_points=st.integers(1, 12),
    compact_after=st.sampled_from([1, 3, 4096]),
)
def test_window_reports_equal_walking_every_charge(steps: list[tuple[str, float, int]], window_s: int, max_points: int,
                                                  compact_after: int) -> None:
    """Adds (now and then out of order) and reports at rising times: usage, next release, when a
    full window opens and the schedule, read from the slices, are what walking every charge gives."""
    original, windows_module.COMPACT_AFTER = windows_module.COMPACT_AFTER, compact_after
    try:
        window, added, clock = RollingWindow(window_s, points=max_points), [], 0.0
        for kind, step, value in steps:
            if kind == "add":  # a charge around the clock: mostly just after it, sometimes before
                ts = round(clock + step - 0.5, 3)
                window.add(ts, value)
                added.append((ts, value))
            else:
                clock += step
                expected = naive_view(added, now=clock, window_s=window_s, limit=value, max_points=max_points)
                assert view("w", window, now=clock, limit=value) == expected
                assert list(window) == sorted((c for c in added if c[0] > clock - window_s and c[1] > 0), key=lambda c: c[0])
    finally:
        windows_module.COMPACT_AFTER = original


def test_a_long_history_compacts_and_stays_exact() -> None:
    charges = [(NOW + i * 0.25, 1 + i % 7) for i in range(20_000)]
    window = RollingWindow(600, charges, points=30)
    for now in (NOW + 700, NOW + 2_000, NOW + 4_000, NOW + 5_500):
        expected = naive_view(charges, now=now, window_s=600, limit=10_000, max_points=30)
        assert view("w", window, now=now, limit=10_000) == expected
        assert len(window._ts) < 2 * len(window) + windows_module.COMPACT_AFTER  # expired entries are cut off
    window.add(NOW + 5_600, 5)
    assert list(window)[-1] == (NOW + 5_600, 5) and window.total == counted(charges + [(NOW + 5_600, 5)], NOW + 5_500, 600)


def test_both_windows_hold_only_their_own_charges() -> None:
    charges = [(NOW - 3 * 86400, 5), (NOW - 6 * 3600, 7), (NOW - 60, 11)]
    five_hour, seven_day = both_windows(charges, NOW)
    assert (list(five_hour), five_hour.total) == ([(NOW - 60, 11)], 11)
    assert (list(seven_day), seven_day.total) == (charges, 23)


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
    shown = view_of([(NOW - 60, used)] if used else [], FIVE_HOURS_S)
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
    shown = view_of([], FIVE_HOURS_S)
    assert (shown.used_percent, shown.status, shown.resets_at, shown.available_at, shown.schedule) == (
        0.0, "allowed", None, None, ())


def test_resets_at_is_when_the_oldest_in_window_charge_leaves() -> None:
    charges = [
        (NOW - FIVE_HOURS_S, 400_000),  # exactly W old: already out, ignored
        (NOW - 100.4, 100_000),  # the oldest that counts
        (NOW - 10, 100_000),
    ]
    shown = view_of(charges, FIVE_HOURS_S)
    assert shown.used_percent == 20.0
    assert shown.resets_at == math.ceil(NOW - 100.4 + FIVE_HOURS_S) == int(NOW) - 100 + FIVE_HOURS_S
    assert shown.available_at is None  # not full


def test_zero_credit_events_do_not_set_the_next_release() -> None:
    """A request charged nothing frees nothing when it ages out (the database keeps such events)."""
    charges = [(NOW - 500, 0), (NOW - 100, 300_000)]
    shown = view_of(charges, FIVE_HOURS_S)
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
    shown = view_of(charges, FIVE_HOURS_S)
    assert shown.status == "rejected"
    expected = leaves_at(charges[leaving][0], FIVE_HOURS_S)
    assert shown.available_at == expected
    assert counted(charges, expected, FIVE_HOURS_S) < LIMIT <= counted(charges, expected - 1, FIVE_HOURS_S)


def test_available_at_is_none_below_100_percent() -> None:
    assert RollingWindow(FIVE_HOURS_S, [(NOW, 999_999)]).available_at(LIMIT) is None


# schedule


def test_schedule_steps_down_as_each_charge_leaves() -> None:
    charges = [(NOW - 7200, 500_000), (NOW - 3600, 250_000), (NOW - 60.5, 250_000)]
    shown = view_of(charges, FIVE_HOURS_S)
    assert shown.schedule == (
        (int(NOW) - 7200 + FIVE_HOURS_S, 50.0),
        (int(NOW) - 3600 + FIVE_HOURS_S, 25.0),
        (int(NOW) - 60 + FIVE_HOURS_S, 0.0),
    )
    assert shown.to_json()["schedule"][0] == {"at": int(NOW) - 7200 + FIVE_HOURS_S, "used_percent": 50.0}


def test_charges_leaving_in_the_same_second_make_one_step() -> None:
    charges = [(NOW - 100.7, 300_000), (NOW - 100.2, 300_000)]
    shown = view_of(charges, FIVE_HOURS_S)
    assert shown.schedule == ((int(NOW) - 100 + FIVE_HOURS_S, 0.0),)


@BOTH_WINDOWS
def test_a_busy_window_schedule_is_bucketed_to_a_chart_sized_list(window_s: int) -> None:
    step = window_s / 5000
    charges = [(NOW - window_s + step * (i + 1), 1_000) for i in range(5000)]
    shown = view_of(charges, window_s, 120)
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
    shown = view_of(charges, window_s, max_points)
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
    five, seven = (view(name, window, now=NOW, limit=LIMIT)
                   for name, window in zip(("five_hour", "seven_day"), both_windows(charges, NOW)))
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
