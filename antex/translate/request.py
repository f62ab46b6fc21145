"""The Anthropic Messages request both OpenAI front doors build.

Each front door reads its own wire format into a `MessagesRequest`; `anthropic_body()` then
applies the rules where Anthropic parameters interact (thinking vs. sampling and forced tools,
structured output, tool choice) in one place, so chat and responses cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from antex.translate import TranslationError

# Thinking budget per OpenAI reasoning effort ("none" means no thinking).
EFFORT_BUDGET_TOKENS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768}
REASONING_EFFORTS = frozenset({"none", *EFFORT_BUDGET_TOKENS})
MIN_THINKING_BUDGET_TOKENS = 1024  # Anthropic refuses smaller budgets
# JSON mode has no schema, so there is nothing for Anthropic's output_config to enforce.
JSON_OBJECT_INSTRUCTION = (
    "Respond with a single valid JSON object and nothing else: no prose, no code fences."
)
THINKING_BLOCK_TYPES = frozenset({"thinking", "redacted_thinking"})


@dataclass(frozen=True)
class ToolChoice:
    """OpenAI's choice, normalised: mode "auto" | "none" | "required" | "tool" (with `name`)."""

    mode: str
    name: str | None = None


@dataclass(frozen=True)
class OutputFormat:
    """Structured output: kind "json_schema" (with `schema`) or "json_object"."""

    kind: str
    schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class MessagesRequest:
    """What a front door read from an OpenAI request, already in Anthropic's terms."""

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int
    system: tuple[str, ...] = ()
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True
    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: tuple[str, ...] = ()
    user_id: str | None = None
    output_format: OutputFormat | None = None
    reasoning_effort: str | None = None
    stream: bool = False


def anthropic_body(request: MessagesRequest, *, thinking_supported: bool) -> dict[str, Any]:
    """The upstream JSON body. Prompt caching is always on (top-level `cache_control`), as
    OpenAI caches prompt prefixes automatically and its clients resend whole histories."""
    thinking = _thinking(request) if thinking_supported else None
    messages = request.messages if thinking else _without_thinking(request.messages)
    body: dict[str, Any] = {"model": request.model, "max_tokens": request.max_tokens, "messages": messages}
    system = list(request.system)
    if request.output_format and request.output_format.kind == "json_object":
        system.append(JSON_OBJECT_INSTRUCTION)
    if system:
        body["system"] = "\n\n".join(system)
    if thinking:
        body["thinking"] = thinking  # Anthropic refuses temperature/top_p changes with thinking
    elif request.temperature is not None:
        body["temperature"] = request.temperature  # recent models refuse temperature with top_p
    elif request.top_p is not None:
        body["top_p"] = request.top_p
    if request.tools:
        body["tools"] = list(request.tools)
        choice = _tool_choice(request.tool_choice, parallel=request.parallel_tool_calls)
        if choice:
            body["tool_choice"] = choice
    if request.stop_sequences:
        body["stop_sequences"] = list(request.stop_sequences)
    if request.user_id:
        body["metadata"] = {"user_id": request.user_id}
    if request.output_format and request.output_format.kind == "json_schema":
        schema = request.output_format.schema
        body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    body["cache_control"] = {"type": "ephemeral"}
    if request.stream:
        body["stream"] = True
    return body


def merge_turns(turns: Iterable[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Anthropic messages from role-tagged block lists: [("user", [a]), ("user", [b])] ->
    [{"role": "user", "content": [a, b]}].

    Anthropic wants alternating roles and, in a user turn, tool results before anything else;
    OpenAI histories allow repeats and any order. Empty text blocks are dropped (Anthropic
    refuses them), and turns left empty with them.
    """
    messages: list[dict[str, Any]] = []
    for role, blocks in turns:
        blocks = [block for block in blocks if not (block["type"] == "text" and not block["text"])]
        if not blocks:
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    for message in messages:
        if message["role"] == "user":
            message["content"].sort(key=lambda block: block["type"] != "tool_result")
    return messages


def function_tool(
    name: object, description: object, parameters: object, *, param: str
) -> dict[str, Any]:
    """An OpenAI function tool as an Anthropic tool: parameters become `input_schema`."""
    if not isinstance(name, str) or not name:
        raise TranslationError(f"{param}.name must be a non-empty string", param=f"{param}.name")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise TranslationError(
            f"{param}.parameters must be a JSON schema object", param=f"{param}.parameters"
        )
    tool: dict[str, Any] = {"name": name, "input_schema": {"type": "object", **parameters}}
    if isinstance(description, str) and description:
        tool["description"] = description
    return tool


def _tool_choice(choice: ToolChoice | None, *, parallel: bool) -> dict[str, Any] | None:
    """Anthropic's tool_choice: required -> any, a named function -> tool, none -> none."""
    if choice and choice.mode == "none":
        return {"type": "none"}
    if choice and choice.mode == "required":
        result: dict[str, Any] = {"type": "any"}
    elif choice and choice.mode == "tool":
        result = {"type": "tool", "name": choice.name}
    elif parallel:
        return None  # Anthropic's default is auto, parallel allowed
    else:
        result = {"type": "auto"}
    if not parallel:
        result["disable_parallel_tool_use"] = True
    return result


def _thinking(request: MessagesRequest) -> dict[str, Any] | None:
    """reasoning effort -> {"type": "enabled", "budget_tokens": N}, or None where Anthropic would
    refuse thinking: no room under max_tokens, a forced tool, or a tool loop whose last assistant
    turn carries no thinking block (clients that drop thinking cannot resume with it on).

    OpenAI counts reasoning inside max_tokens, as Anthropic does; the budget takes at most half
    of it so that thinking cannot starve the answer."""
    effort = request.reasoning_effort
    if effort is None or effort == "none":
        return None
    budget = min(EFFORT_BUDGET_TOKENS[effort], request.max_tokens // 2)
    if budget < MIN_THINKING_BUDGET_TOKENS:
        return None
    if request.tool_choice and request.tool_choice.mode in ("required", "tool"):
        return None
    if _last_tool_turn_lacks_thinking(request.messages):
        return None
    return {"type": "enabled", "budget_tokens": budget}


def _last_tool_turn_lacks_thinking(messages: list[dict[str, Any]]) -> bool:
    assistant = next((m for m in reversed(messages) if m["role"] == "assistant"), None)
    if assistant is None or not any(block["type"] == "tool_use" for block in assistant["content"]):
        return False
    return assistant["content"][0]["type"] not in THINKING_BLOCK_TYPES


def _without_thinking(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replayed thinking blocks are only sent while thinking is on."""
    if not any(block["type"] in THINKING_BLOCK_TYPES for m in messages for block in m["content"]):
        return messages
    return merge_turns(
        (m["role"], [block for block in m["content"] if block["type"] not in THINKING_BLOCK_TYPES])
        for m in messages
    )


# ---- reading the fields both front doors have -------------------------------------------------


def model_field(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise TranslationError("model is required and must be a non-empty string", param="model")
    return model


def max_tokens_field(body: Mapping[str, Any], keys: tuple[str, ...], default: int) -> int:
    """The first of `keys` that is set (e.g. max_completion_tokens, then max_tokens)."""
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TranslationError(f"{key} must be a positive integer", param=key)
        return value
    return default


def number_field(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TranslationError(f"{key} must be a number", param=key)
    return float(value)


def temperature_field(body: Mapping[str, Any]) -> float | None:
    """OpenAI allows 0-2, Anthropic 0-1: clamped rather than refused."""
    value = number_field(body, "temperature")
    return None if value is None else min(max(value, 0.0), 1.0)


def effort_field(value: object, *, param: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in REASONING_EFFORTS:
        allowed = ", ".join(sorted(REASONING_EFFORTS))
        raise TranslationError(f"{param} must be one of {allowed}", param=param)
    return value


def stream_field(body: Mapping[str, Any]) -> bool:
    """`stream` must be a real boolean: "false" as a string would otherwise switch streaming on."""
    value = body.get("stream")
    if value is not None and not isinstance(value, bool):
        raise TranslationError("stream must be true or false", param="stream")
    return value is True


def user_field(body: Mapping[str, Any]) -> str | None:
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise TranslationError("user must be a string", param="user")
    return user or None


def json_schema_format(schema: object, *, param: str) -> OutputFormat:
    if not isinstance(schema, dict):
        raise TranslationError(f"{param} must be a JSON schema object", param=param)
    return OutputFormat("json_schema", schema)
