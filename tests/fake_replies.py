"""Scripted replies for the fake Anthropic upstream: what it answers, and how it misbehaves.

A `Reply` holds the final content blocks, the usage numbers and any fault. The same Reply serves
a streaming and a non-streaming request; the stream events are derived from the final blocks, so
the two never disagree. Encoding is pure (no server here): the parts that never change per request
are encoded once and cached on the Reply, which keeps the benchmark path cheap.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

DEFAULT_TEXT = "Hello from the fake upstream."
DEFAULT_OUTPUT_TOKENS = 12
TOOL_JSON_PIECES = 4  # input_json_delta events per tool_use block (after the leading "")
THINKING_PIECES = 3

# What Anthropic sends mid-stream when it gives up, e.g. while overloaded.
ERROR_EVENT = (
    b"event: error\n"
    b'data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
)
# Neither SSE nor JSON, but valid UTF-8, so a client fails on parsing rather than decoding.
MALFORMED_BYTES = (
    b"<html>\x00\x01 upstream garbage\r\n"
    b"event: message_start\n"
    b'data: {"type": "message_start", "message": {"id": \n\n'
)


def sse(event: str, data: Any) -> bytes:
    """One SSE frame as Anthropic frames it: an `event:` line, a `data:` line, a blank line."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def estimate_input_tokens(body: bytes) -> int:
    """A deterministic stand-in for the tokenizer, so tests can predict the number."""
    return max(1, len(body) // 4)


def _split(text: str, pieces: int) -> list[str]:
    """`text` cut into `pieces` non-empty parts of near-equal length (fewer if it is shorter)."""
    pieces = max(1, min(pieces, len(text)))
    bounds = [len(text) * i // pieces for i in range(pieces + 1)]
    return [text[start:end] for start, end in itertools.pairwise(bounds)]


@dataclass(frozen=True)
class Reply:
    """One scripted upstream answer, for a stream or not (by the request's `stream` flag).

    Faults count SSE events as written (message_start is event 1); at most one of `stall_after`,
    `cut_after`, `error_event_after` applies. On a non-streaming request a stall never answers, a
    cut closes the connection with no response, an error event becomes an HTTP 529, and `delay_s`
    is paid once per event the stream would have had.
    """

    content: tuple[dict[str, Any], ...] = ()
    stop_reason: str = "end_turn"
    model: str | None = None  # None: echo the request's model
    input_tokens: int | None = None  # None: estimate_input_tokens(request body)
    output_tokens: int = DEFAULT_OUTPUT_TOKENS
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0
    web_search_requests: int = 0  # server-tool uses, reported in usage.server_tool_use when any
    web_fetch_requests: int = 0
    events: int = 1  # text_delta events per text block
    status: int = 200  # with error_type: an HTTP error instead of a message
    error_type: str | None = None
    error_message: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # before every SSE event: a slow stream
    stall_after: int | None = None  # then send nothing until the client leaves
    cut_after: int | None = None  # then close the connection, no message_stop
    error_event_after: int | None = None  # then `event: error` (overloaded_error) and end
    malformed: bool = False  # answer 200 with MALFORMED_BYTES
    gzip: bool = False  # non-streaming body sent with content-encoding: gzip

    def __post_init__(self) -> None:
        faults = [self.stall_after, self.cut_after, self.error_event_after]
        if sum(fault is not None for fault in faults) > 1:
            raise ValueError("choose one of stall_after, cut_after, error_event_after")
        if self.events < 1:
            raise ValueError("events must be at least 1")
        for block in self.content:
            if block["type"] == "text" and len(block["text"]) < self.events:
                raise ValueError(f"{self.events} events need at least that many characters of text")

    @property
    def fault_after(self) -> int | None:
        """How many events to send before the fault, if there is one."""
        faults = [self.stall_after, self.cut_after, self.error_event_after]
        return next((fault for fault in faults if fault is not None), None)

    def usage(self, input_tokens: int, output_tokens: int, tool_uses: bool = True) -> dict[str, Any]:
        """The usage object of a message, in the field order Anthropic uses (tool_uses: the final
        server-tool counts, or zeros as a stream's message_start has them)."""
        usage = {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": self.cache_write_5m + self.cache_write_1h,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_write_5m,
                "ephemeral_1h_input_tokens": self.cache_write_1h,
            },
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }
        if self.web_search_requests or self.web_fetch_requests:
            usage["server_tool_use"] = {
                "web_search_requests": self.web_search_requests if tool_uses else 0,
                "web_fetch_requests": self.web_fetch_requests if tool_uses else 0,
            }
        return usage

    def message(self, message_id: str, model: str, input_tokens: int) -> bytes:
        """The non-streaming response body."""
        return orjson.dumps(
            {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": self.model or model,
                "content": orjson.Fragment(self._content_json),
                "stop_reason": self.stop_reason,
                "stop_sequence": None,
                "usage": self.usage(input_tokens, self.output_tokens),
            }
        )

    def stream(self, message_id: str, model: str, input_tokens: int) -> list[bytes]:
        """Every SSE frame of the streaming response, message_start to message_stop."""
        start = {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": self.model or model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": self.usage(input_tokens, 1, tool_uses=False),
            },
        }
        # Cumulative, like the current API: the totals so far, input and cache fields included.
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
            "usage": {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": self.cache_write_5m + self.cache_write_1h,
                "cache_read_input_tokens": self.cache_read,
                "output_tokens": self.output_tokens,
            },
        }
        if self.web_search_requests or self.web_fetch_requests:
            delta["usage"]["server_tool_use"] = {"web_search_requests": self.web_search_requests,
                                                 "web_fetch_requests": self.web_fetch_requests}
        return [
            sse("message_start", start),
            *self._block_events,
            sse("message_delta", delta),
            sse("message_stop", {"type": "message_stop"}),
        ]

    def error_body(self, request_id: str) -> bytes:
        return error_body(self.error_type or "api_error", self.error_message, request_id)

    @functools.cached_property
    def event_count(self) -> int:
        return len(self._block_events) + 3

    @functools.cached_property
    def _content_json(self) -> bytes:
        return orjson.dumps(list(self.content))

    @functools.cached_property
    def _block_events(self) -> list[bytes]:
        """The frames between message_start and message_delta; the same for every request."""
        frames: list[bytes] = []
        for index, block in enumerate(self.content):
            frames.append(
                sse(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": _empty(block)},
                )
            )
            if index == 0:
                frames.append(sse("ping", {"type": "ping"}))
            for delta in self._deltas(block):
                frames.append(
                    sse(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                    )
                )
            frames.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
        return frames or [sse("ping", {"type": "ping"})]

    def _deltas(self, block: dict[str, Any]) -> list[dict[str, str]]:
        if block["type"] == "text":
            return [
                {"type": "text_delta", "text": part} for part in _split(block["text"], self.events)
            ]
        if block["type"] == "tool_use":
            encoded = orjson.dumps(block["input"]).decode()
            parts = ["", *_split(encoded, TOOL_JSON_PIECES)]
            return [{"type": "input_json_delta", "partial_json": part} for part in parts]
        if block["type"] == "thinking":
            parts = _split(block["thinking"], THINKING_PIECES)
            return [{"type": "thinking_delta", "thinking": part} for part in parts] + [
                {"type": "signature_delta", "signature": block["signature"]}
            ]
        raise ValueError(f"no stream form for a {block['type']!r} block")


def _empty(block: dict[str, Any]) -> dict[str, Any]:
    """A block as content_block_start announces it, before any delta."""
    if block["type"] == "text":
        return {"type": "text", "text": ""}
    if block["type"] == "tool_use":
        return {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
    return {"type": "thinking", "thinking": "", "signature": ""}


def error_body(error_type: str, message: str, request_id: str) -> bytes:
    """Anthropic's error shape, with the request id it also sends as a header."""
    return orjson.dumps(
        {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": request_id,
        }
    )


def text_reply(text: str = DEFAULT_TEXT, **options: Any) -> Reply:
    """A plain answer; `options` are Reply fields (usage numbers, model, events, faults)."""
    return Reply(content=({"type": "text", "text": text},), **options)


def tool_use_reply(
    name: str,
    input: dict[str, Any],
    *,
    text: str | None = None,
    id: str = "toolu_01FakeUpstreamToolUse",
    **options: Any,
) -> Reply:
    """A tool call, optionally after some text; stop_reason defaults to "tool_use"."""
    leading = ({"type": "text", "text": text},) if text else ()
    tool = {"type": "tool_use", "id": id, "name": name, "input": input}
    return Reply(content=(*leading, tool), **{"stop_reason": "tool_use", **options})


def thinking_reply(
    thinking: str, text: str = DEFAULT_TEXT, *, signature: str = "EqFakeSignature==", **options: Any
) -> Reply:
    """Extended thinking: a thinking block (with its signature), then the answer's text."""
    blocks = (
        {"type": "thinking", "thinking": thinking, "signature": signature},
        {"type": "text", "text": text},
    )
    return Reply(content=blocks, **options)


def error_reply(
    status: int, error_type: str, message: str, *, headers: Mapping[str, str] | None = None
) -> Reply:
    """An HTTP error, before any stream: error_reply(529, "overloaded_error", "Overloaded")."""
    return Reply(status=status, error_type=error_type, error_message=message, headers=headers or {})


def default_reply(events: int = 1) -> Reply:
    """The answer when nothing is queued: DEFAULT_TEXT, repeated if `events` needs more text."""
    repeats = -(-events // len(DEFAULT_TEXT))
    return text_reply(" ".join([DEFAULT_TEXT] * repeats), events=events)
