"""Pure: a /v1/usage body drawn for a terminal: two bars per key, percent, and when each frees up.

Colour only when asked (the CLI asks on a TTY); plain text otherwise, so pipes and logs stay clean.
"""
from __future__ import annotations

import math
from datetime import datetime

from antex.windows import format_wait

BAR_WIDTH = 24
TITLES = {"five_hour": "5-hour", "seven_day": "weekly"}
STATUS_WORDS = {"allowed": "ok", "allowed_warning": "near the limit", "rejected": "full"}
COLOURS = {"allowed": "\x1b[32m", "allowed_warning": "\x1b[33m", "rejected": "\x1b[31m"}
RESET = "\x1b[0m"
DIM = "\x1b[2m"


def shown_percent(percent: float) -> str:
    """One decimal, rounded down: a window shows 100.0 only once it is really full."""
    return f"{math.floor(percent * 10) / 10:.1f}"


def bar(percent: float, width: int = BAR_WIDTH) -> str:
    """`████████░░░░` filled to `percent` (capped at 100 %)."""
    filled = round(min(max(percent, 0.0), 100.0) / 100 * width)
    return "█" * filled + "░" * (width - filled)


def clock_time(ts: int, now: float) -> str:
    """Local time: 'HH:MM' today, 'Mon 14:05' within a week, else the date."""
    moment = datetime.fromtimestamp(ts).astimezone()
    today = datetime.fromtimestamp(now).astimezone()
    if moment.date() == today.date():
        return moment.strftime("%H:%M")
    if (moment.date() - today.date()).days < 7:
        return moment.strftime("%a %H:%M")
    return moment.strftime("%Y-%m-%d %H:%M")


def frees_up(window: dict, now: float) -> str:
    """When capacity comes back, saying which kind of time it is."""
    if window["available_at"] is not None:
        at = window["available_at"]
        return f"full: available again at {clock_time(at, now)} (in {format_wait(at - now)})"
    if window["resets_at"] is not None:
        at = window["resets_at"]
        return f"next release at {clock_time(at, now)} (in {format_wait(at - now)})"
    return "nothing used in this window"


def window_line(name: str, window: dict, now: float, colour: bool) -> str:
    pct = window["used_percent"]
    drawn = bar(pct)
    if colour:
        drawn = COLOURS[window["status"]] + drawn + RESET
    return f"  {TITLES[name]:<7} {drawn} {shown_percent(pct):>6}%  {frees_up(window, now)}"


def render_usage(body: dict, *, colour: bool = False) -> str:
    """One key: a heading, then a bar per window."""
    key = body["key"]
    now = body["now"]
    status = STATUS_WORDS[body["status"]]
    heading = f"{key['name']}  {key['prefix']}…  plan {key['plan']}  ({status})"
    if colour:
        heading = f"\x1b[1m{heading}{RESET}"
    lines = [heading]
    for name in ("five_hour", "seven_day"):
        lines.append(window_line(name, body[name], now, colour))
    return "\n".join(lines)


def render_table(bodies: list[dict], *, colour: bool = False) -> str:
    """Every key, compactly: one row per key with both bars."""
    if not bodies:
        return "No keys yet. Create one with: antex keys create NAME --plan PLAN"
    name_width = max(len(b["key"]["name"]) for b in bodies)
    header = f"{'KEY':<{name_width}}  {'PREFIX':<13} {'PLAN':<8} {'5-HOUR':<20} {'WEEKLY':<20} FREES UP"
    lines = [f"{DIM}{header}{RESET}" if colour else header]
    for body in bodies:
        cells = []
        for name in ("five_hour", "seven_day"):
            window = body[name]
            drawn = bar(window["used_percent"], 12)
            if colour:
                drawn = COLOURS[window["status"]] + drawn + RESET
            cells.append(f"{drawn} {shown_percent(window['used_percent']):>5}%")
        soonest = _soonest(body)
        key = body["key"]
        lines.append(f"{key['name']:<{name_width}}  {key['prefix'] + '…':<13} {key['plan']:<8} {cells[0]}  {cells[1]}  {soonest}")
    return "\n".join(lines)


def _soonest(body: dict) -> str:
    """The most useful time for a one-line row: when a full window opens, else the next release."""
    now = body["now"]
    full = [body[n] for n in ("five_hour", "seven_day") if body[n]["available_at"] is not None]
    if full:
        at = max(w["available_at"] for w in full)
        return f"available {clock_time(at, now)} (in {format_wait(at - now)})"
    releases = [body[n]["resets_at"] for n in ("five_hour", "seven_day") if body[n]["resets_at"] is not None]
    if releases:
        at = min(releases)
        return f"next release {clock_time(at, now)} (in {format_wait(at - now)})"
    return "-"
