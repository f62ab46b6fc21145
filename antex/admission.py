"""The checks a request passes before it goes upstream, in order; each refusal is a typed error.

Order: key status, plan, client IP, the two windows, concurrency (before the body is read), then
model and max_tokens (max_tokens_to_send) once it is. Everything here reads in-memory state: no SQLite on the hot path, and the same cost
whatever the history.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Callable, NamedTuple

from antex.auth import KeyRecord
from antex.catalog import Limits, Model
from antex.config import Config
from antex.credits import to_micro
from antex.errors import AntexError
from antex.ledger import IP_WINDOW_S, KeyState, Ledger
from antex.windows import RollingWindow, format_wait, percent, status_for

SHOULD_NOT_RETRY_AFTER_S = 60
WINDOW_TITLES = {"5h": "5-hour", "7d": "weekly (7-day)"}


class WindowState(NamedTuple):
    """One window at admission time: enough for the rate-limit headers and the 429.

    Built twice per request, so a NamedTuple (a frozen dataclass costs several times more)."""

    short: str  # "5h" / "7d"
    used: int
    limit: int
    resets_at: int | None  # when the oldest charge leaves (next release)
    window_s: int

    @property
    def status(self) -> str:
        return status_for(self.used, self.limit)

    def reset(self, now: float) -> int:
        """The next release, or when a charge made now would leave an empty window."""
        return self.resets_at if self.resets_at is not None else math.ceil(now + self.window_s)


def window_states(state: KeyState, limits_5h: float, limits_7d: float, now: float) -> tuple[WindowState, WindowState]:
    """Both windows of a key at `now`, expiring what left them: amortised O(1)."""
    return _window_state("5h", state.five_hour, limits_5h, now), _window_state("7d", state.seven_day, limits_7d, now)


def _window_state(short: str, window: RollingWindow, limit: float, now: float) -> WindowState:
    used = window.expire(now)
    return WindowState(short, used, to_micro(limit), window.resets_at(), window.window_s)


def ratelimit_headers(windows: tuple[WindowState, WindowState], now: float) -> list[tuple[str, str]]:
    """Anthropic's subscription-style headers: utilization 0-1, reset in unix seconds, status.

    Written out for the two windows rather than looped: this runs for every response."""
    five, seven = windows
    five_status, seven_status = five.status, seven.status
    return [
        (_FIVE_HOUR[0], f"{five.used / five.limit:.4f}"), (_FIVE_HOUR[1], str(five.reset(now))), (_FIVE_HOUR[2], five_status),
        (_SEVEN_DAY[0], f"{seven.used / seven.limit:.4f}"), (_SEVEN_DAY[1], str(seven.reset(now))), (_SEVEN_DAY[2], seven_status),
        (UNIFIED_STATUS, five_status if _RANK[five_status] >= _RANK[seven_status] else seven_status),
    ]


UNIFIED_STATUS = "anthropic-ratelimit-unified-status"
_RANK = {"allowed": 0, "allowed_warning": 1, "rejected": 2}  # from best to worst
_FIVE_HOUR, _SEVEN_DAY = (tuple(f"anthropic-ratelimit-unified-{short}-{part}" for part in ("utilization", "reset", "status"))
                          for short in ("5h", "7d"))


def codex_headers(windows: tuple[WindowState, WindowState], now: float) -> list[tuple[str, str]]:
    """The same two windows as Codex CLI reads them: 5 h primary, 7 d secondary, in percent."""
    headers = []
    for window, (used_percent, minutes, reset_at) in zip(windows, _CODEX_NAMES):
        headers += ((used_percent, f"{percent(window.used, window.limit):g}"), (minutes, str(window.window_s // 60)),
                    (reset_at, str(window.reset(now))))
    return headers


_CODEX_NAMES = tuple(tuple(f"x-codex-{name}-{part}" for part in ("used-percent", "window-minutes", "reset-at"))
                     for name in ("primary", "secondary"))


def max_tokens_to_send(limits: Limits, model: Model, requested: int) -> int:
    """The max_tokens a request is served with, or max_tokens_too_large.

    The plan's cap bounds what one request may cost, so by default a request over it (a client
    library defaulting to the model's own maximum) is served lowered to the cap; a plan with
    max_tokens_over = "refuse" refuses it instead. Over the model's own limit, nothing could serve it.
    Pure: the routes call it once the body is read, whatever the order of the other checks."""
    limit = model.max_output_tokens
    if limit is not None and requested > limit:
        raise AntexError("max_tokens_too_large",
                         f"max_tokens {requested} is over {model.id}'s output limit of {limit}. "
                         f"Send max_tokens of {limit} or less.", param="max_tokens")
    cap = limits.max_tokens
    if requested <= cap:
        return requested
    if limits.max_tokens_over == "refuse":
        raise AntexError("max_tokens_too_large",
                         f"max_tokens {requested} is over your plan's cap of {cap}. Send max_tokens of {cap} or less.",
                         param="max_tokens")
    return cap


def allowed_model(model: Model | None, requested: str, limits: Limits, plan: str) -> Model:
    """The model a request names (`model`, as the config resolved it), if the plan allows it.
    Pure: run inline or in a parse worker (antex/prepare.py)."""
    if model is None:
        raise AntexError("not_found_error", f"Unknown model {requested!r}. GET /v1/models lists the models your key can use.")
    if not limits.allows(model.id):
        raise AntexError("permission_error",
                         f"Model {model.id} is not included in your plan ({plan}). GET /v1/models lists the models your key can use.")
    return model


class Ticket:
    """An admitted request's hold on its key's concurrency slot; release exactly once.
    `changed` tells the other instances sharing the store (antex/cluster.py), when there are any."""

    __slots__ = ("state", "released", "changed")

    def __init__(self, state: KeyState, changed: Callable[[KeyState], None] | None = None) -> None:
        self.state = state
        self.released = False
        self.changed = changed
        state.in_flight += 1
        if changed is not None:
            changed(state)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.state.in_flight -= 1
            if self.changed is not None:
                self.changed(self.state)


class Admission:
    def __init__(self, config: Config, ledger: Ledger) -> None:
        self.config = config
        self.ledger = ledger

    def check_key(self, key: KeyRecord) -> None:
        row = key.row
        if row.status == "quarantined":
            reason = f" Reason: {row.status_reason}." if row.status_reason else ""
            raise AntexError("key_quarantined",
                             f"This API key is quarantined and cannot be used until the operator releases it.{reason}")
        if key.limits is None:
            raise AntexError("permission_error",
                             f"This key's plan {row.plan!r} is not configured on this gateway. Ask the operator to fix the key's plan.")

    def check_ip(self, key: KeyRecord, state: KeyState, ip: str, now: float) -> None:
        """Refuse a new client IP past the plan's max_ips distinct IPs in 24 h."""
        limit = key.limits.max_ips
        if limit and ip not in state.ips:
            horizon = now - IP_WINDOW_S
            for old_ip in [a for a, seen in state.ips.items() if seen <= horizon]:
                del state.ips[old_ip]
            if len(state.ips) >= limit:
                self._count_ip_refusal(key, state, now)
                raise AntexError("ip_limit_reached",
                                 f"This key has been used from {limit} different IP addresses in the last 24 hours, the most "
                                 f"your plan allows, and this is a new one. Use it from a known address, or wait until an "
                                 f"address has been unused for 24 hours.")
        self.ledger.seen_ip(key.id, state, ip, now)

    def _count_ip_refusal(self, key: KeyRecord, state: KeyState, now: float) -> None:
        rule = self.config.quarantine
        hits = state.ip_refusals
        hits.append(now)
        if self.ledger.ip_refused is not None:  # the other instances count it too
            self.ledger.ip_refused(key.id, now)
        while hits and hits[0] <= now - rule.within_s:
            hits.popleft()
        if len(hits) >= rule.ip_limit_hits:
            reason = f"automatic: refused for ip_limit_reached {len(hits)} times within {rule.within_s:g}s (possible leaked key)"
            self.ledger.quarantine(key.id, reason, now)
            hits.clear()

    def check_windows(self, key: KeyRecord, state: KeyState, now: float) -> tuple[WindowState, WindowState]:
        windows = window_states(state, key.limits.credits_5h, key.limits.credits_7d, now)
        for window, rolling in zip(windows, (state.five_hour, state.seven_day)):
            if window.used >= window.limit:
                ready = rolling.available_at(window.limit) or math.ceil(now + 1)
                raise self._window_full(window, ready, now, windows)
        return windows

    @staticmethod
    def _window_full(window: WindowState, ready: int, now: float, windows: tuple[WindowState, ...]) -> AntexError:
        wait_s = max(1, math.ceil(ready - now))
        headers = dict(ratelimit_headers(windows, now))
        headers[f"anthropic-ratelimit-unified-{window.short}-reset"] = str(ready)
        headers["anthropic-ratelimit-unified-reset"] = str(ready)
        headers["retry-after"] = str(wait_s)
        if wait_s > SHOULD_NOT_RETRY_AFTER_S:
            headers["x-should-retry"] = "false"
        title = WINDOW_TITLES[window.short]
        release = datetime.fromtimestamp(window.resets_at or ready, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        at = datetime.fromtimestamp(ready, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        return AntexError(
            "rate_limit_error",
            f"Your {title} usage window is full (100% used). It is a rolling window: capacity comes back as earlier "
            f"requests age out of it, the next at {release}. Requests will be accepted again from {at} "
            f"(in {format_wait(wait_s)}).",
            headers=headers,
        )

    def check_concurrency(self, key: KeyRecord, state: KeyState) -> Ticket:
        cap = key.limits.max_concurrent
        if cap and state.in_flight + state.remote_in_flight >= cap:
            raise AntexError("rate_limit_error",
                             f"This key already has {state.in_flight + state.remote_in_flight} requests in flight, the most "
                             f"your plan allows at once ({cap}). Wait for one to finish.", headers={"retry-after": "1"})
        # Only a capped key's count matters to the other instances (the full counts go every second).
        return Ticket(state, self.ledger.in_flight_changed if cap else None)

