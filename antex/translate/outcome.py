"""How an Anthropic message ended, told the way each OpenAI API tells it: why it stopped and
how many tokens it took.

Anthropic usage reads (message_start, then cumulative message_delta):
    {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 900,
     "output_tokens": 40}
OpenAI counts cached tokens inside the prompt total, Anthropic beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Responses API: stop reasons that leave a response "incomplete", with the reason it gives.
INCOMPLETE_REASONS = {
    "max_tokens": "max_output_tokens",
    "model_context_window_exceeded": "max_output_tokens",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: str | None) -> str:
    """Chat Completions' finish_reason for an Anthropic stop_reason."""
    return FINISH_REASONS.get(stop_reason or "end_turn", "stop")


def incomplete_reason(stop_reason: str | None) -> str | None:
    """Responses API's incomplete_details.reason, or None when the response completed."""
    return INCOMPLETE_REASONS.get(stop_reason or "end_turn")


def merge_usage(current: Mapping[str, Any], update: Mapping[str, Any] | None) -> dict[str, Any]:
    """message_start usage overwritten field by field by message_delta usage: the delta's
    counts are running totals, never increments."""
    return {**current, **{key: value for key, value in (update or {}).items() if value is not None}}


def _count(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) else 0


def _prompt_tokens(usage: Mapping[str, Any]) -> int:
    return (
        _count(usage, "input_tokens")
        + _count(usage, "cache_read_input_tokens")
        + _count(usage, "cache_creation_input_tokens")
    )


def chat_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    prompt, completion = _prompt_tokens(usage), _count(usage, "output_tokens")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": _count(usage, "cache_read_input_tokens"),
            "cache_write_tokens": _count(usage, "cache_creation_input_tokens"),
        },
    }


def responses_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Integers only: Codex refuses a response.completed whose usage has nulls. Anthropic does
    not count thinking tokens apart from output, so reasoning_tokens stays 0."""
    prompt, output = _prompt_tokens(usage), _count(usage, "output_tokens")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": _count(usage, "cache_read_input_tokens"),
            "cache_write_tokens": _count(usage, "cache_creation_input_tokens"),
        },
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + output,
    }
