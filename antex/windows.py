"""Pure rolling-window math: sums, next release, full availability and the release schedule.

A charge made at time t counts in a window of W seconds while t > now - W: it stops counting
exactly W after it happened. Nothing resets at a fixed hour; capacity comes back charge by charge.
Amounts are integer micro-credits, so sums are exact.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Sequence

FIVE_HOURS_S = 5 * 3600
SEVEN_DAYS_S = 7 * 86400
WINDOWS = (("five_hour", "5h", FIVE_HOURS_S), ("seven_day", "7d", SEVEN_DAYS_S))
WARNING_PERCENT = 80.0
SCHEDULE_POINTS = 120

Charge = tuple[float, int]  # (unix seconds, micro-credits)


class RollingWindow:
    """The charges of one key inside one window, oldest first, with their running sum.

    Adding and expiring are amortised O(1): admission costs the same whatever the key's history.
    """

    __slots__ = ("window_s", "charges", "total")

    def __init__(self, window_s: int, charges: Iterable[Charge] = ()) -> None:
        """`charges` may come in any order; a sorted history (as SQLite returns it) loads in one pass."""
        self.window_s = window_s
        kept = [charge for charge in charges if charge[1] > 0]
        if any(kept[i][0] > kept[i + 1][0] for i in range(len(kept) - 1)):
            kept.sort()
        self.charges: deque[Charge] = deque(kept)
        self.total = sum(amount for _, amount in kept)

    def add(self, ts: float, amount: int) -> None:
        if amount <= 0:
            return
        charges = self.charges
        if charges and charges[-1][0] > ts:
            # Rare: a charge settled out of order (clock step). Keep the deque sorted.
            ordered = sorted([*charges, (ts, amount)])
            charges.clear()
            charges.extend(ordered)
        elif charges and math.ceil(charges[-1][0]) == math.ceil(ts):
            # Charges within the same second share one entry (windows are exact to the second, and
            # every time shown is a whole second): a busy key's memory grows with seconds, not requests.
            charges[-1] = (ts, charges[-1][1] + amount)
        else:
            charges.append((ts, amount))
        self.total += amount

    def expire(self, now: float) -> int:
        """Drop the charges that left the window; returns the micro-credits still in it."""
        horizon = now - self.window_s
        charges = self.charges
        while charges and charges[0][0] <= horizon:
            self.total -= charges.popleft()[1]
        return self.total


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


def view(name: str, charges: Sequence[Charge], *, now: float, window_s: int, limit: int,
         max_points: int = SCHEDULE_POINTS) -> WindowView:
    """The window `name` at `now`, from charges sorted oldest first (older ones are ignored).

    Zero-credit events free nothing when they leave, so they set no release time.
    """
    horizon = now - window_s
    live = [(ts, amount) for ts, amount in charges if ts > horizon and amount > 0]
    used = sum(amount for _, amount in live)
    return WindowView(
        name=name,
        window_s=window_s,
        used_percent=percent(used, limit),
        status=status_for(used, limit),
        resets_at=leaves_at(live[0][0], window_s) if live else None,
        available_at=available_at(live, used, window_s, limit),
        schedule=schedule(live, used, window_s, limit, max_points),
    )


def available_at(live: Sequence[Charge], used: int, window_s: int, limit: int) -> int | None:
    """When a full window drops below 100 %: the time the charge that tips it under leaves."""
    if used < limit:
        return None
    for ts, amount in live:
        used -= amount
        if used < limit:
            return leaves_at(ts, window_s)
    return None  # unreachable while limit > 0: an empty window is below any positive limit


def schedule(live: Sequence[Charge], used: int, window_s: int, limit: int,
             max_points: int) -> tuple[tuple[int, float], ...]:
    """How the percentage falls if nothing more is used: (from this second, percent) steps.

    Charges leaving in the same slice of the window (window/max_points wide) are drawn as one
    step at the slice's last release, so a busy key's schedule stays a small chart-sized list.
    """
    slice_s = window_s / max_points
    points: list[tuple[int, float]] = []
    for ts, amount in live:
        used -= amount
        at = leaves_at(ts, window_s)
        if points and int(points[-1][0] // slice_s) == int(at // slice_s):
            points[-1] = (at, percent(used, limit))
        else:
            points.append((at, percent(used, limit)))
    return tuple(points)


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
