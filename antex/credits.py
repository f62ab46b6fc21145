"""Pure credit math: token counts x a model's rates -> credits.

Credits are kept as integer micro-credits (credits x 1e6) everywhere they are summed, so
rolling windows add and subtract exactly and never drift.
"""
from __future__ import annotations

from typing import NamedTuple

from antex.catalog import Rates

MICRO = 1_000_000


class Usage(NamedTuple):
    """Token counts of one request, by kind, and its server-tool uses (what credits are priced by).

    A NamedTuple, not a dataclass: one is built for every request, and a frozen dataclass costs
    several times as much to construct."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    web_search_requests: int = 0
    web_fetch_requests: int = 0

    @classmethod
    def from_anthropic(cls, usage: dict) -> "Usage":
        """Read an Anthropic `usage` object, e.g.
        {"input_tokens": 12, "output_tokens": 30, "cache_creation_input_tokens": 100,
         "cache_read_input_tokens": 2000,
         "cache_creation": {"ephemeral_5m_input_tokens": 60, "ephemeral_1h_input_tokens": 40},
         "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 1}}
        When the cache-write split is missing, every cache write counts as a 5-minute one;
        when only the split is there, its two parts are the cache writes.
        """
        get = usage.get
        cache_write = _count(get("cache_creation_input_tokens"))
        split = get("cache_creation")
        if isinstance(split, dict):
            write_1h = _count(split.get("ephemeral_1h_input_tokens"))
            if not cache_write:
                cache_write = _count(split.get("ephemeral_5m_input_tokens")) + write_1h
            write_1h = min(write_1h, cache_write)
        else:
            write_1h = 0
        tools = get("server_tool_use")
        if isinstance(tools, dict):
            searches, fetches = _count(tools.get("web_search_requests")), _count(tools.get("web_fetch_requests"))
        else:
            searches = fetches = 0
        return cls(_count(get("input_tokens")), _count(get("output_tokens")), cache_write - write_1h, write_1h,
                   _count(get("cache_read_input_tokens")), searches, fetches)


def _count(value: object) -> int:
    """A token count from the wire: anything that is not a non-negative int counts as 0."""
    return value if type(value) is int and value > 0 else 0  # not bool, and not an int subclass


def micro_credits(usage: Usage, rates: Rates) -> int:
    """Micro-credits for `usage`: sum of tokens x rate (credits per million tokens), plus server-tool
    uses x rate (credits per use)."""
    tokens = (usage.input_tokens * rates.input + usage.output_tokens * rates.output
              + usage.cache_write_5m_tokens * rates.cache_write_5m + usage.cache_write_1h_tokens * rates.cache_write_1h
              + usage.cache_read_tokens * rates.cache_read)
    if usage.web_search_requests or usage.web_fetch_requests:  # rare: skipped, per request, when unused
        tokens += (usage.web_search_requests * rates.web_search + usage.web_fetch_requests * rates.web_fetch) * MICRO
    return round(tokens)


def to_micro(credits: float) -> int:
    return round(credits * MICRO)
