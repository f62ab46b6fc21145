"""The Responses API's stored state, as data: the items a request brings to keep, its references to
kept items, and the list page GET /v1/responses/{id}/input_items answers with.

Pure: the route reads and writes the store (antex/responses_store.py); nothing here does I/O.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

# OpenAI's own prefixes for the ids of items it keeps, by item type
_ID_PREFIXES = {"message": "msg", "function_call_output": "fco", "custom_tool_call_output": "ctco",
                "function_call": "fc", "custom_tool_call": "ctc", "reasoning": "rs"}
DEFAULT_PAGE = 20
MAX_PAGE = 100


def time_ordered(stem: str | None = None) -> str:
    """An id stem that starts with the time in milliseconds (11 hex digits), then `stem` (random
    when None), as OpenAI's own ids start with the time: kept responses and items then land at the
    end of their indexes instead of on a random page each, which halves the store writer's work
    per kept response."""
    return f"{time.time_ns() // 1_000_000:011x}{uuid.uuid4().hex if stem is None else stem}"


def referenced_ids(input_value: object) -> list[str]:
    """The ids of `input`'s item references, [{"type": "item_reference", "id": "msg_01…_0"}, …]."""
    if not isinstance(input_value, list):
        return []
    return [item["id"] for item in input_value
            if isinstance(item, dict) and item.get("type") == "item_reference" and isinstance(item.get("id"), str)]


def with_references(input_value: object, found: dict[str, dict[str, Any]]) -> object:
    """`input` with each item reference replaced by the item it names (all of them in `found`)."""
    if not isinstance(input_value, list):
        return input_value
    return [found[item["id"]] if isinstance(item, dict) and item.get("type") == "item_reference"
            and isinstance(item.get("id"), str) else item for item in input_value]


def own_items(input_value: object) -> list[dict[str, Any]]:
    """The request's input as the items to keep, in the shape OpenAI lists them: a string becomes
    a user message, a message's string content a text part, and an item without an id (a tool's
    output, a new user message) gets one."""
    if isinstance(input_value, str):
        input_value = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": input_value}]}]
    if not isinstance(input_value, list):
        return []
    items = []
    for item in input_value:
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if not isinstance(item.get("id"), str) or not item["id"]:
            prefix = _ID_PREFIXES.get(kind, "item") if isinstance(kind, str) else "item"
            item = {**item, "id": f"{prefix}_{time_ordered()}"}
        if "type" not in item:
            item = {"type": kind, **item}
        if kind == "message" and isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            item = {**item, "content": [{"type": part, "text": item["content"]}]}
        items.append(item)
    return items


class PageError(ValueError):
    """A list parameter out of range; its message names the parameter."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def page_params(query: dict[str, str]) -> tuple[str | None, int, str]:
    """(after, limit, order) from ?after=…&limit=…&order=asc|desc (OpenAI's: limit 1-100, default
    20; order default desc)."""
    limit_text = query.get("limit")
    limit = DEFAULT_PAGE
    if limit_text is not None:
        if not limit_text.isascii() or not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
            raise PageError(f"limit: must be an integer from 1 to {MAX_PAGE}.", "limit")
        limit = int(limit_text)
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise PageError('order: must be "asc" or "desc".', "order")
    return query.get("after") or None, limit, order


def list_page(items: list[dict[str, Any]], *, after: str | None, limit: int, order: str) -> dict[str, Any]:
    """OpenAI's list object over `items` (oldest first): {"object": "list", "data": […],
    "first_id": "msg_…", "last_id": "msg_…", "has_more": false}; `after` names the last item of
    the previous page (an unknown one: an empty page, so no client pages forever)."""
    ordered = items if order == "asc" else items[::-1]
    start = 0
    if after is not None:
        start = next((index + 1 for index, item in enumerate(ordered) if item.get("id") == after), len(ordered))
    data = ordered[start:start + limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": start + limit < len(ordered),
    }
