"""Pure rolling-window math: sums, next release, full availability and the release schedule.

A charge made at time t counts in a window of W seconds while t > now - W: it stops counting
exactly W after it happened. Nothing resets at a fixed hour; capacity comes back charge by charge.
Amounts are integer micro-credits, so sums are exact.
"""
from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter, le
from typing import Iterable, Iterator

FIVE_HOURS_S = 5 * 3600
SEVEN_DAYS_S = 7 * 86400
WINDOWS = (("five_hour", "5h", FIVE_HOURS_S), ("seven_day", "7d", SEVEN_DAYS_S))
WARNING_PERCENT = 80.0
SCHEDULE_POINTS = 120

Charge = tuple[float, int]  # (unix seconds, micro-credits)
COMPACT_AFTER = 4096  # expired entries kept at the front of the arrays before they are cut off


class RollingWindow:
    """The charges of one key inside one window, oldest first, with their running sum and their
    sums per schedule slice.

    Charges sit in two flat arrays (times, amounts) behind a moving head: 16 bytes each, no Python
    object per charge, so a history of a million charges loads in C loops and gives the garbage
    collector nothing to walk. Adding and expiring are amortised O(1), and the usage report reads
    the per-slice sums (at most `points` + 1 of them): admission and /v1/usage cost the same
    whatever the key's history.

    A slice is [index, end, amount]: the charges whose release second `leaves_at` falls in
    [index x slice_s, (index + 1) x slice_s), ending (exclusive) at array position `end`, with
    their sum; each slice starts where the previous one ends, the first at the head.
    """

    __slots__ = ("window_s", "slice_s", "total", "_ts", "_amounts", "_head", "_slices")

    def __init__(self, window_s: int, charges: Iterable[Charge] = (), points: int = SCHEDULE_POINTS) -> None:
        """`charges` may come in any order; zero-credit events free nothing, so they are not kept."""
        self.window_s = window_s
        self.slice_s = window_s / points
        self._reset()
        self.extend(charges)

    def _reset(self) -> None:
        self._ts, self._amounts, self._head, self.total = array("d"), array("q"), 0, 0
        self._slices: deque[list[int]] = deque()

    def extend(self, charges: Iterable[Charge], since: float | None = None) -> None:
        """Add many charges (those after `since`, when given). A sorted run of positive charges no
        older than those held, as SQLite returns a history, is appended by C loops: read in chunks
        of a few thousand, a million charges load without holding the event loop for long."""
        charges = charges if isinstance(charges, list) else list(charges)
        if all(map(le, charges, islice(charges, 1, None))):
            start = 0 if since is None else bisect_right(charges, since, key=itemgetter(0))
            times, amounts = _arrays(charges[start:])
            if not times or (min(amounts) > 0 and (len(self) == 0 or self._ts[-1] <= times[0])):
                self._append_sorted(times, amounts)
                return
        kept = [*self, *((ts, amount) for ts, amount in charges if since is None or ts > since)]
        self._reset()
        self._append_sorted(*_arrays(sorted(((ts, amount) for ts, amount in kept if amount > 0), key=itemgetter(0))))

    def _append_sorted(self, times: array, amounts: array) -> None:
        """Append charges sorted oldest first, positive and no older than those held."""
        held = self._ts
        position = len(held)
        held.extend(times)
        self._amounts.extend(amounts)
        self.total += sum(amounts)
        slices, key, end_all = self._slices, self._slice_of, len(held)
        while position < end_all:
            index = key(held[position])
            end = bisect_left(held, index + 1, position, end_all, key=key)
            amount = sum(self._amounts[position:end])
            if slices and slices[-1][0] == index:
                slices[-1][1] = end
                slices[-1][2] += amount
            else:
                slices.append([index, end, amount])
            position = end

    def _slice_of(self, ts: float) -> int:
        """The schedule slice of a charge made at `ts`: by the second it leaves the window."""
        return int(leaves_at(ts, self.window_s) // self.slice_s)

    def __len__(self) -> int:
        return len(self._ts) - self._head

    def __iter__(self) -> Iterator[Charge]:
        """The charges still held, oldest first (expire first for those in the window at a time)."""
        return zip(islice(self._ts, self._head, None), islice(self._amounts, self._head, None))

    def add(self, ts: float, amount: int) -> None:
        if amount <= 0:
            return
        times = self._ts
        count = len(times)
        if count > self._head and times[-1] > ts:  # rare: settled out of order (a clock step)
            self.extend([(ts, amount)])
            return
        times.append(ts)
        self._amounts.append(amount)
        self.total += amount
        index = int(math.ceil(ts + self.window_s) // self.slice_s)  # _slice_of written out: this runs per request
        slices = self._slices
        if slices and slices[-1][0] == index:
            last = slices[-1]
            last[1] = count + 1
            last[2] += amount
        else:
            slices.append([index, count + 1, amount])

    def expire(self, now: float) -> int:
        """Drop the charges that left the window; returns the micro-credits still in it."""
        times, head = self._ts, self._head
        horizon = now - self.window_s
        if head == len(times) or times[head] > horizon:
            return self.total
        if head + 1 == len(times) or times[head + 1] > horizon:  # a busy key's usual case: one left
            stop = head + 1
        else:
            stop = bisect_right(times, horizon, head)
        slices = self._slices
        while slices and slices[0][1] <= stop:  # whole slices gone
            head = slices[0][1]
            self.total -= slices.popleft()[2]
        if head < stop:  # part of the first slice gone
            gone = self._amounts[head] if stop == head + 1 else sum(self._amounts[head:stop])
            slices[0][2] -= gone
            self.total -= gone
        self._head = stop
        if stop >= COMPACT_AFTER and 2 * stop >= len(times):
            self._compact()
        return self.total

    def _compact(self) -> None:
        """Cut the expired entries off the front: amortised O(1) per charge."""
        head = self._head
        del self._ts[:head]
        del self._amounts[:head]
        for piece in self._slices:
            piece[1] -= head
        self._head = 0

    def resets_at(self) -> int | None:
        """When the oldest charge held leaves (expire first)."""
        head = self._head  # not len(self): this runs per request
        return leaves_at(self._ts[head], self.window_s) if head < len(self._ts) else None

    def available_at(self, limit: int) -> int | None:
        """When a full window drops below 100 %: the time the charge that tips it under leaves.

        Whole slices are skipped by their sums; only the slice holding that charge is walked."""
        used = self.total
        if used < limit:
            return None
        start = self._head
        for _, end, amount in self._slices:
            if used - amount < limit:
                for position in range(start, end):
                    used -= self._amounts[position]
                    if used < limit:
                        return leaves_at(self._ts[position], self.window_s)
            used -= amount
            start = end
        return None  # unreachable while limit > 0: an empty window is below any positive limit

    def schedule(self, limit: int) -> tuple[tuple[int, float], ...]:
        """How the percentage falls if nothing more is used: (from this second, percent) steps.

        Charges leaving in the same slice of the window (window/points wide) are drawn as one
        step at the slice's last release, so a busy key's schedule stays a small chart-sized list."""
        used = self.total
        points = []
        for _, end, amount in self._slices:
            used -= amount
            points.append((leaves_at(self._ts[end - 1], self.window_s), percent(used, limit)))
        return tuple(points)


def both_windows(charges: Iterable[Charge], now: float) -> tuple[RollingWindow, RollingWindow]:
    """The 5-hour and 7-day windows at `now` of a history; extend them with `extend_both`."""
    windows = RollingWindow(FIVE_HOURS_S), RollingWindow(SEVEN_DAYS_S)
    extend_both(windows, charges, now)
    return windows


def extend_both(windows: tuple[RollingWindow, RollingWindow], charges: Iterable[Charge], now: float) -> None:
    """Add `charges` to both windows, each keeping only those still in it at `now`."""
    charges = charges if isinstance(charges, list) else list(charges)
    for window in windows:
        window.extend(charges, since=now - window.window_s)


def _arrays(charges: list[Charge]) -> tuple[array, array]:
    return array("d", map(itemgetter(0), charges)), array("q", map(itemgetter(1), charges))


def percent(used: int, limit: int) -> float:
    """Used share of a window in percent, rounded down to 0.01 (limit is always > 0).

    Down, never to nearest: 99.996 % is not shown as 100 % while requests are still allowed.
    """
    return (used * 10_000 // limit) / 100


def status_for(used: int, limit: int) -> str:
    """`allowed`, `allowed_warning` at 80 % or more, `rejected` at 100 % or more."""
    if used >= limit:
        return "rejected"
    if used * 100 >= limit * WARNING_PERCENT:
        return "allowed_warning"
    return "allowed"


def leaves_at(ts: float, window_s: int) -> int:
    """The whole second from which a charge made at `ts` no longer counts."""
    return math.ceil(ts + window_s)


@dataclass(frozen=True)
class WindowView:
    """What a person may know of one window: percentages and times, never credits."""

    name: str
    window_s: int
    used_percent: float
    status: str
    resets_at: int | None
    available_at: int | None
    schedule: tuple[tuple[int, float], ...]

    def to_json(self) -> dict:
        return {
            "window_seconds": self.window_s,
            "used_percent": self.used_percent,
            "status": self.status,
            "resets_at": self.resets_at,
            "available_at": self.available_at,
            "schedule": [{"at": at, "used_percent": pct} for at, pct in self.schedule],
        }


def view(name: str, window: RollingWindow, *, now: float, limit: int) -> WindowView:
    """The window `name` at `now` (expiring what left it), in percentages and times."""
    used = window.expire(now)
    return WindowView(
        name=name,
        window_s=window.window_s,
        used_percent=percent(used, limit),
        status=status_for(used, limit),
        resets_at=window.resets_at(),
        available_at=window.available_at(limit),
        schedule=window.schedule(limit),
    )


def format_wait(seconds: float) -> str:
    """A short human duration: '45s', '12m', '1h 12m', '2d 3h'."""
    seconds = max(0, int(math.ceil(seconds)))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m" if not secs else f"{minutes}m {secs}s"
    return f"{secs}s"
