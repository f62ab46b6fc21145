"""antex.report: the usage a person sees is percentages and times, never a credit amount."""

from __future__ import annotations

import orjson
import pytest

from antex.catalog import Limits
from antex.config import load
from antex.report import activity_body, usage_body
from antex.windows import FIVE_HOURS_S, SEVEN_DAYS_S, both_windows, leaves_at

NOW = 1_764_000_000.25
PRO = load(None).plans["pro"]  # 2000 credits per 5 h, 20000 per 7 d
MICRO = 1_000_000
WINDOW_KEYS = {"window_seconds", "used_percent", "status", "resets_at", "available_at", "schedule"}


def keys_of(value: object) -> set[str]:
    """Every key of every object in a JSON-like body, however deep."""
    if isinstance(value, dict):
        return set(value).union(*(keys_of(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(keys_of(v) for v in value))
    return set()


def body_for(charges: list[tuple[float, int]], limits: Limits = PRO) -> dict:
    return usage_body(name="alice", prefix="sk_live_AbCd", plan="pro", limits=limits,
                      windows=both_windows(sorted(charges), NOW), now=NOW)


def test_usage_body_shape() -> None:
    charges = [(NOW - 2 * 86400, 3_210_987_654), (NOW - 3600, 1_234_567_891)]
    body = body_for(charges)
    assert set(body) == {"object", "now", "status", "key", "five_hour", "seven_day"}
    assert (body["object"], body["now"], body["status"]) == ("usage", 1_764_000_000, "allowed")
    assert body["key"] == {"name": "alice", "prefix": "sk_live_AbCd", "plan": "pro", "max_concurrent": 8}
    for title, window_s in (("five_hour", FIVE_HOURS_S), ("seven_day", SEVEN_DAYS_S)):
        assert set(body[title]) == WINDOW_KEYS
        assert body[title]["window_seconds"] == window_s
        assert all(set(point) == {"at", "used_percent"} for point in body[title]["schedule"])
    # 1234.57 of 2000 credits in 5 h; 4445.56 of 20000 in 7 d (rounded down to 0.01 %)
    assert (body["five_hour"]["used_percent"], body["seven_day"]["used_percent"]) == (61.72, 22.22)
    orjson.dumps(body)  # plain JSON


def test_no_credit_amount_appears_anywhere() -> None:
    charges = [(NOW - 2 * 86400, 3_210_987_654), (NOW - 3600, 1_234_567_891)]
    body = body_for(charges)
    assert not [key for key in keys_of(body) if "credit" in key.lower()]
    text = orjson.dumps(body).decode()
    for raw in ("3210987654", "1234567891", "3210.98", "1234.56", "4445.55", "2000", "20000"):
        assert raw not in text


@pytest.mark.parametrize(
    "credits_5h, credits_before, statuses",
    [
        # credits used in the last hour, credits used two days ago -> (5h, 7d, overall) status
        (0, 0, ("allowed", "allowed", "allowed")),
        (1000, 0, ("allowed", "allowed", "allowed")),
        (1700, 0, ("allowed_warning", "allowed", "allowed_warning")),
        (2000, 0, ("rejected", "allowed", "rejected")),
        (100, 16_000, ("allowed", "allowed_warning", "allowed_warning")),
        (0, 20_000, ("allowed", "rejected", "rejected")),
        (1700, 19_000, ("allowed_warning", "rejected", "rejected")),
    ],
)
def test_statuses(credits_5h: int, credits_before: int, statuses: tuple[str, str, str]) -> None:
    charges = [(NOW - 2 * 86400, credits_before * MICRO), (NOW - 3600, credits_5h * MICRO)]
    body = body_for([c for c in charges if c[1]])
    assert (body["five_hour"]["status"], body["seven_day"]["status"], body["status"]) == statuses
    assert body["five_hour"]["used_percent"] == 100 * credits_5h / 2000
    assert body["seven_day"]["used_percent"] == 100 * (credits_5h + credits_before) / 20000


def test_a_full_window_says_when_it_is_available_again() -> None:
    charges = [(NOW - 4 * 3600, 1500 * MICRO), (NOW - 3600, 600 * MICRO)]
    five = body_for(charges)["five_hour"]
    first_leaves = leaves_at(NOW - 4 * 3600, FIVE_HOURS_S)
    assert (five["used_percent"], five["status"]) == (105.0, "rejected")
    assert five["resets_at"] == five["available_at"] == first_leaves
    assert five["schedule"] == [
        {"at": first_leaves, "used_percent": 30.0},
        {"at": leaves_at(NOW - 3600, FIVE_HOURS_S), "used_percent": 0.0},
    ]


def test_a_key_override_changes_the_percentages() -> None:
    limits = Limits(credits_5h=100, credits_7d=1000, models=("claude-*",), max_tokens=1, max_ips=0, max_concurrent=0)
    body = body_for([(NOW - 60, 25 * MICRO)], limits)
    assert (body["five_hour"]["used_percent"], body["seven_day"]["used_percent"]) == (25.0, 2.5)


def test_activity_body() -> None:
    per_window = {"five_hour": [("claude-sonnet-4-6", 12, 604 * MICRO), ("claude-haiku-4-5", 3, 1_234_567)]}
    body = activity_body(per_window=per_window, limits=PRO, now=NOW)
    assert body == {
        "object": "usage.activity",
        "now": 1_764_000_000,
        "five_hour": {"by_model": [
            {"model": "claude-sonnet-4-6", "requests": 12, "percent": 30.2},
            {"model": "claude-haiku-4-5", "requests": 3, "percent": 0.06},
        ]},
        "seven_day": {"by_model": []},
    }
    assert not [key for key in keys_of(body) if "credit" in key.lower()]
    assert "1234567" not in orjson.dumps(body).decode()
