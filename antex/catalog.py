"""What the gateway sells: models with their credit rates, and plans with their limits; a key's
limits are its plan's with the key's own overrides on top. Plain data, built by config.py from
TOML and read by admission, credits, the report and the CLI."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Rates:
    """Credits per million tokens, by token kind; and credits per use of a server tool."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float
    # Per use; a model table that names neither (an operator's own model) is charged Anthropic's
    # published prices at the shipped scale of one credit per cent: $10 per 1,000 searches, fetches free.
    web_search: float = 1.0  # per search (usage.server_tool_use.web_search_requests)
    web_fetch: float = 0.0  # per fetch (usage.server_tool_use.web_fetch_requests)


RATE_FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read", "web_search", "web_fetch")


@dataclass(frozen=True)
class Model:
    id: str
    display_name: str
    tier: str
    aliases: tuple[str, ...]
    rates: Rates
    created_at: str  # release date, YYYY-MM-DD
    max_output_tokens: int | None = None  # the model's own output limit (None: unknown, the plan's cap alone)


@dataclass(frozen=True)
class Limits:
    """A plan's limits; also the shape of a key's effective limits after its overrides."""

    credits_5h: float
    credits_7d: float
    models: tuple[str, ...]
    max_tokens: int
    max_ips: int
    max_concurrent: int
    max_tokens_over: str = "lower"  # a larger max_tokens: "lower" it to the cap, or "refuse" it
    # model ID -> allowed: glob matching on every request would cost more than the rest of admission
    _allowed: dict[str, bool] = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def allows(self, model_id: str) -> bool:
        allowed = self._allowed.get(model_id)
        if allowed is None:
            allowed = self._allowed[model_id] = any(fnmatch.fnmatchcase(model_id, pattern) for pattern in self.models)
        return allowed


LIMIT_FIELDS = ("credits_5h", "credits_7d", "models", "max_tokens", "max_ips", "max_concurrent", "max_tokens_over")
MAX_TOKENS_OVER = ("lower", "refuse")  # a larger max_tokens: lowered to the cap, or refused


def apply_overrides(plan: Limits, overrides: dict[str, Any]) -> Limits:
    """A key's effective limits: its plan's, with the key's own overrides on top."""
    if not overrides:
        return plan
    values = {name: overrides.get(name, getattr(plan, name)) for name in LIMIT_FIELDS}
    values["models"] = tuple(values["models"])
    return Limits(**values)
