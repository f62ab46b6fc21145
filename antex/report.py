"""Pure: the usage report a person sees (GET /v1/usage, `antex usage`): percentages and times.

Built from a key's charges of the last 7 days; never exposes a credit amount.
"""
from __future__ import annotations

from typing import Sequence

from antex.config import Limits
from antex.credits import to_micro
from antex.windows import WINDOWS, Charge, view


def usage_body(*, name: str, prefix: str, plan: str, limits: Limits, charges: Sequence[Charge], now: float) -> dict:
    """The /v1/usage body, e.g.
    {"object": "usage", "now": 1764064000, "status": "allowed",
     "key": {"name": "alice", "prefix": "sk_live_AbCd", "plan": "pro"},
     "five_hour": {"window_seconds": 18000, "used_percent": 42.5, "status": "allowed",
                   "resets_at": 1764070000, "available_at": null, "schedule": [...]},
     "seven_day": {...}}
    """
    body: dict = {"object": "usage", "now": int(now), "key": {"name": name, "prefix": prefix, "plan": plan}}
    statuses = []
    for (title, _, window_s), limit in zip(WINDOWS, (limits.credits_5h, limits.credits_7d)):
        window = view(title, charges, now=now, window_s=window_s, limit=to_micro(limit))
        body[title] = window.to_json()
        statuses.append(window.status)
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
