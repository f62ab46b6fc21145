"""Pure: the usage report a person sees (GET /v1/usage, `antex usage`): percentages and times.

Built from a key's two windows (5 hours, 7 days); never exposes a credit amount.
"""
from __future__ import annotations

from antex.catalog import Limits
from antex.credits import to_micro
from antex.windows import WINDOWS, RollingWindow, view


def usage_body(*, name: str, prefix: str, plan: str, limits: Limits, windows: tuple[RollingWindow, RollingWindow],
               now: float) -> dict:
    """The /v1/usage body, e.g.
    {"object": "usage", "now": 1764064000, "status": "allowed",
     "key": {"name": "alice", "prefix": "sk_live_AbCd", "plan": "pro", "max_concurrent": 8},
     "five_hour": {"window_seconds": 18000, "used_percent": 42.5, "status": "allowed",
                   "resets_at": 1764070000, "available_at": null, "schedule": [...]},
     "seven_day": {...}}
    """
    # max_concurrent 0: no cap on requests in flight, so nothing bounds how far past 100 % they go
    body: dict = {"object": "usage", "now": int(now),
                  "key": {"name": name, "prefix": prefix, "plan": plan, "max_concurrent": limits.max_concurrent}}
    statuses = []
    for (title, _, _), window, limit in zip(WINDOWS, windows, (limits.credits_5h, limits.credits_7d)):
        shown = view(title, window, now=now, limit=to_micro(limit))
        body[title] = shown.to_json()
        statuses.append(shown.status)
    body["status"] = max(statuses, key=("allowed", "allowed_warning", "rejected").index)
    return body


def activity_body(*, per_window: dict[str, list[tuple[str, int, int]]], limits: Limits, now: float) -> dict:
    """Requests per model in each window, as a share of the window's limit, e.g.
    {"object": "usage.activity", "now": 1764064000,
     "five_hour": {"by_model": [{"model": "claude-sonnet-4-6", "requests": 12, "percent": 30.2}]}, ...}
    `per_window` maps "five_hour"/"seven_day" to (model, requests, micro-credits) rows.
    """
    body: dict = {"object": "usage.activity", "now": int(now)}
    for (title, _, _), limit in zip(WINDOWS, (limits.credits_5h, limits.credits_7d)):
        body[title] = {"by_model": [
            {"model": model, "requests": requests, "percent": round(100.0 * micro / to_micro(limit), 2)}
            for model, requests, micro in per_window.get(title, [])
        ]}
    return body
