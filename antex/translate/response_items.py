"""Responses API output items and the `response` object, built from Anthropic content blocks.

Shared by the non-streaming translation and the stream: Codex acts on the items of
`response.output_item.done`, so they must be exactly what a non-streaming call returns.

Thinking round-trips through `encrypted_content`: the Anthropic block (text and signature) is
packed there, Codex stores the reasoning item and sends it back in the next request's `input`,
and it is unpacked into the thinking block Anthropic needs to continue a tool loop with
thinking on. Encrypted content from OpenAI itself does not unpack and is dropped.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

REASONING_PACK_PREFIX = "antex.thinking.v1:"
_PACKED_FIELDS = {"thinking": ("thinking", "signature"), "redacted_thinking": ("data",)}


_ID_PREFIXES = {"message": "msg", "reasoning": "rs", "function_call": "fc", "custom_tool_call": "ctc"}


def item_id(kind: str, base: str, index: int) -> str:
    """The id of the `kind` output item made of the Anthropic block at `index` of message `base`."""
    return f"{_ID_PREFIXES[kind]}_{base}_{index}"


def output_text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def message_item(item_id: str, text: str | None) -> dict[str, Any]:
    """An assistant message; `text` None is the in-progress item of output_item.added."""
    return {
        "type": "message",
        "id": item_id,
        "status": "in_progress" if text is None else "completed",
        "role": "assistant",
        "content": [] if text is None else [output_text_part(text)],
    }


def function_call_item(item_id: str, call_id: str, name: str, arguments: str | None) -> dict[str, Any]:
    """`arguments` is the JSON string Codex parses itself; None while in progress."""
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments or "",
        "status": "in_progress" if arguments is None else "completed",
    }


def custom_tool_call_item(item_id: str, call_id: str, name: str, tool_input: str) -> dict[str, Any]:
    """A freeform tool call (e.g. apply_patch): `input` is the raw text, not JSON."""
    return {"type": "custom_tool_call", "id": item_id, "call_id": call_id, "name": name, "input": tool_input}


def reasoning_item(item_id: str, block: dict[str, Any] | None) -> dict[str, Any]:
    """A thinking block as a reasoning item: its text as the summary, the whole block packed."""
    item: dict[str, Any] = {"type": "reasoning", "id": item_id, "summary": []}
    if block is None:
        return item
    if block.get("thinking"):
        item["summary"] = [{"type": "summary_text", "text": block["thinking"]}]
    item["encrypted_content"] = pack_thinking(block)
    return item


def custom_input(tool_input: object) -> str:
    """The tool_use input we asked Claude for, {"input": "*** Begin Patch…"}, as the raw string."""
    if isinstance(tool_input, dict) and isinstance(tool_input.get("input"), str):
        return tool_input["input"]
    return orjson.dumps(tool_input).decode()


def output_item(
    block: dict[str, Any], *, base: str, index: int, custom_tools: frozenset[str]
) -> dict[str, Any] | None:
    """The finished output item for a complete Anthropic content block (None: no item)."""
    kind = block.get("type")
    if kind == "text":
        return message_item(item_id("message", base, index), block.get("text", ""))
    if kind in _PACKED_FIELDS:
        return reasoning_item(item_id("reasoning", base, index), block)
    if kind == "tool_use" and block.get("name") in custom_tools:
        tool_input = custom_input(block.get("input"))
        return custom_tool_call_item(item_id("custom_tool_call", base, index), block["id"], block["name"], tool_input)
    if kind == "tool_use":
        arguments = orjson.dumps(block.get("input") or {}).decode()
        return function_call_item(item_id("function_call", base, index), block["id"], block["name"], arguments)
    return None


def pack_thinking(block: dict[str, Any]) -> str:
    """{"type": "thinking", "thinking": "…", "signature": "Eq…"} -> "antex.thinking.v1:eyJ0…"."""
    fields = {key: block.get(key, "") for key in ("type", *_PACKED_FIELDS[block["type"]])}
    return REASONING_PACK_PREFIX + base64.urlsafe_b64encode(orjson.dumps(fields)).decode()


def unpack_thinking(encrypted_content: object) -> dict[str, Any] | None:
    """The Anthropic thinking block packed by pack_thinking, or None for anything else."""
    if not isinstance(encrypted_content, str) or not encrypted_content.startswith(REASONING_PACK_PREFIX):
        return None
    try:
        block = orjson.loads(base64.urlsafe_b64decode(encrypted_content.removeprefix(REASONING_PACK_PREFIX)))
    except (binascii.Error, ValueError):
        return None
    kind = block.get("type") if isinstance(block, dict) else None
    fields = _PACKED_FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None or not all(isinstance(block.get(key), str) for key in fields):
        return None
    return {key: block[key] for key in ("type", *fields)}


def response_object(
    *,
    response_id: str,
    request: dict[str, Any],
    created: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    incomplete_details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The `response` object, echoing the request's settings. `instructions` is not echoed:
    Codex's run to tens of kilobytes and would be resent in every lifecycle event."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": error,
        "incomplete_details": incomplete_details,
        "model": request.get("model"),
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls") is not False,
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": request.get("tools") or [],
        "temperature": request.get("temperature"),
        "top_p": request.get("top_p"),
        "max_output_tokens": request.get("max_output_tokens"),
        "reasoning": request.get("reasoning"),
        "text": request.get("text"),
        "previous_response_id": previous if isinstance(previous := request.get("previous_response_id"), str) else None,
        "metadata": request.get("metadata") or {},
        "usage": usage,
    }
