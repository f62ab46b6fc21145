"""Anthropic SSE events -> Responses API SSE events, as each upstream event arrives.

Frames go out as `event: <type>\\ndata: <json>\\n\\n` with increasing `sequence_number`s:
response.created, response.in_progress, then per content block response.output_item.added,
its deltas and response.output_item.done, then response.completed (or .incomplete / .failed).
Codex acts on exactly three of them: output_item.done (the authoritative items), completed
(needs `response.id` and integer usage, else Codex reports "stream closed before
response.completed" and retries) and failed (its `error.code` picks Codex's retry policy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import orjson

from antex.translate.message_stream import MessageStream
from antex.translate.outcome import incomplete_reason, responses_usage
from antex.translate.partial_json import StringFieldReader
from antex.translate.response_state import time_ordered
from antex.translate.response_items import (
    custom_input,
    custom_tool_call_item,
    function_call_item,
    item_id,
    message_item,
    output_text_part,
    reasoning_item,
    response_object,
)

# Anthropic error type -> Responses error code, by what Codex does with the code:
# server_error and rate_limit_exceeded are retried ("try again in 20s" in the message sets the
# delay), context_length_exceeded stops with "out of room in the context window", invalid_prompt
# is shown as it is.
FAILURE_CODES = {"rate_limit_error": "rate_limit_exceeded", "invalid_request_error": "invalid_prompt"}


def response_base_id(message_id: object) -> str:
    """msg_01AbC -> 0196f2c3a1b01AbC, the stem of resp_0196f2c3a1b01AbC and of its item ids: the
    time first (see time_ordered), then the upstream message's own id, so either finds the other."""
    return time_ordered(message_id.removeprefix("msg_") if isinstance(message_id, str) and message_id else None)


def failure_code(error_type: str, message: str) -> str:
    if error_type == "invalid_request_error" and "prompt is too long" in message.lower():
        return "context_length_exceeded"
    return FAILURE_CODES.get(error_type, "server_error")


# Anthropic content block type -> output item kind (tool_use may turn out custom, by name).
_ITEM_KINDS = {"text": "message", "thinking": "reasoning", "redacted_thinking": "reasoning",
               "tool_use": "function_call"}


# Anthropic delta type -> the field holding its piece of text
_DELTA_FIELDS = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}


@dataclass
class _OpenItem:
    """An output item whose Anthropic content block has started but not stopped."""

    kind: str  # "message" | "reasoning" | "function_call" | "custom_tool_call"
    item_id: str
    output_index: int
    block: dict[str, Any]  # as content_block_start announced it
    pieces: list[str] = field(default_factory=list)  # text, thinking or partial JSON
    signature: str = ""
    summary_open: bool = False
    input_reader: StringFieldReader | None = None  # a custom tool call's input, decoded as it streams
    streamed_input: str = ""  # custom tool input sent so far
    delta_frame: bytes | None = None  # a %-template, see ResponsesStream._output_text_deltas

    @property
    def call(self) -> tuple[str, str]:
        """(call_id, name) of a tool call: the tool_use id is the call id Codex answers to."""
        return self.block.get("id", ""), self.block.get("name", "")


class ResponsesStream(MessageStream):
    """Anthropic events (see message_stream) -> Responses API events (see the module docstring)."""

    def __init__(self, *, request: dict[str, Any], custom_tools: frozenset[str], created: int) -> None:
        super().__init__()
        self._request = request
        self._custom_tools = custom_tools
        self._created = created
        self._base: str | None = None  # from message_start's id; a random one only if it never comes
        self._sequence = 0
        self._started = False
        self._open: dict[int, _OpenItem] = {}  # by Anthropic block index
        self._items_started = 0
        self._output: list[dict[str, Any]] = []
        self.final: dict[str, Any] | None = None  # the completed (or incomplete) response, once closed

    def _message_start(self, message: dict[str, Any]) -> bytes:
        self._base = response_base_id(message.get("id"))
        return self._start()

    def _complete(self) -> bytes:
        """response.completed, or response.incomplete (max tokens, refusal)."""
        reason = incomplete_reason(self.stop_reason)
        status = "incomplete" if reason else "completed"
        details = {"reason": reason} if reason else None
        response = self._response(status, usage=responses_usage(self.usage), incomplete_details=details)
        self.final = response
        return self._frame(f"response.{status}", response=response)

    def _failure(self, error_type: str, message: str) -> bytes:
        """response.failed with {code, message}; items finished so far stay in its output."""
        error = {"code": failure_code(error_type, message), "message": message}
        usage = responses_usage(self.usage) if self.usage else None
        frames = b"" if self._started else self._start()
        response = self._response("failed", usage=usage, error=error)
        return frames + self._frame("response.failed", response=response)

    # ---- content blocks ------------------------------------------------------------------------

    def _block_start(self, index: int, block: dict[str, Any]) -> bytes:
        kind = _ITEM_KINDS.get(block.get("type"))
        if kind is None:
            return b""  # server tool blocks: never requested, never forwarded
        if kind == "function_call" and block.get("name") in self._custom_tools:
            kind = "custom_tool_call"
        item = _OpenItem(kind, item_id(kind, self._stem(), index), self._items_started, block)
        if kind == "custom_tool_call":
            item.input_reader = StringFieldReader("input")
        self._open[index] = item
        self._items_started += 1
        frames = self._frame("response.output_item.added", output_index=item.output_index,
                             item=self._in_progress(item))
        if kind == "message":
            frames += self._item_frame("response.content_part.added", item, content_index=0,
                                       part=output_text_part(""))
            if block.get("text"):
                frames += self._block_delta(index, {"type": "text_delta", "text": block["text"]})
        return frames

    def _in_progress(self, item: _OpenItem) -> dict[str, Any]:
        if item.kind == "message":
            return message_item(item.item_id, None)
        if item.kind == "reasoning":
            return reasoning_item(item.item_id, None)
        if item.kind == "custom_tool_call":
            return custom_tool_call_item(item.item_id, *item.call, "")
        return function_call_item(item.item_id, *item.call, None)

    def _block_delta(self, index: int, delta: dict[str, Any]) -> bytes:
        item = self._open.get(index)
        if item is None:
            return b""
        kind = delta.get("type")
        if kind == "signature_delta":
            item.signature += delta.get("signature", "")
            return b""
        piece = delta.get(_DELTA_FIELDS.get(kind, ""))
        if not isinstance(piece, str) or not piece:
            return b""
        item.pieces.append(piece)
        if item.kind == "message":
            return self._output_text_deltas(item, [orjson.dumps(piece)])
        if item.kind == "function_call":
            return self._item_frame("response.function_call_arguments.delta", item, delta=piece)
        if item.kind == "custom_tool_call":  # Claude sends it wrapped: {"input": "…"}
            return self._custom_input_delta(item, item.input_reader.feed(piece))
        if item.kind == "reasoning":
            frames = b""
            if not item.summary_open:
                item.summary_open = True
                frames = self._item_frame("response.reasoning_summary_part.added", item, summary_index=0,
                                          part={"type": "summary_text", "text": ""})
            return frames + self._item_frame("response.reasoning_summary_text.delta", item, summary_index=0,
                                             delta=piece)
        return b""

    def _text_deltas(self, indexes: Sequence[bytes], texts: list[str], encoded: Sequence[bytes]) -> bytes | None:
        first = indexes[0]
        item = self._open.get(int(first))
        if item is None or item.kind != "message" or indexes.count(first) != len(indexes) or "" in texts:
            return None  # the general path knows what to make of them
        item.pieces += texts
        return self._output_text_deltas(item, encoded)

    def _output_text_deltas(self, item: _OpenItem, encoded: Sequence[bytes]) -> bytes:
        """response.output_text.delta per text (given JSON-encoded), the bulk of every stream: the
        same frames as _item_frame would build, from a template prepared once per item."""
        if item.delta_frame is None:
            head = orjson.dumps({"type": "response.output_text.delta"})[:-1]
            tail = orjson.dumps({"item_id": item.item_id, "output_index": item.output_index, "content_index": 0})[1:-1]
            before = b"event: response.output_text.delta\ndata: " + head + b',"sequence_number":'
            item.delta_frame = (before.replace(b"%", b"%%") + b"%d," + tail.replace(b"%", b"%%")
                                + b',"delta":%b,"logprobs":[]}\n\n')
        template, sequence = item.delta_frame, self._sequence
        self._sequence = sequence + len(encoded)
        return b"".join([template % pair for pair in zip(range(sequence, self._sequence), encoded)])

    def _block_stop(self, index: int) -> bytes:
        item = self._open.pop(index, None)
        if item is None:
            return b""
        text = "".join(item.pieces)
        finish = {
            "message": self._finish_message,
            "reasoning": self._finish_reasoning,
            "custom_tool_call": self._finish_custom_tool_call,
            "function_call": self._finish_function_call,
        }[item.kind]
        frames, done = finish(item, text)
        self._output.append(done)
        return frames + self._frame("response.output_item.done", output_index=item.output_index, item=done)

    def _finish_message(self, item: _OpenItem, text: str) -> tuple[bytes, dict[str, Any]]:
        frames = self._item_frame("response.output_text.done", item, content_index=0, text=text, logprobs=[])
        frames += self._item_frame("response.content_part.done", item, content_index=0,
                                   part=output_text_part(text))
        return frames, message_item(item.item_id, text)

    def _finish_reasoning(self, item: _OpenItem, text: str) -> tuple[bytes, dict[str, Any]]:
        if item.block.get("type") == "redacted_thinking":
            block = {"type": "redacted_thinking", "data": item.block.get("data", "")}
        else:
            block = {"type": "thinking", "thinking": text, "signature": item.signature}
        frames = b""
        if item.summary_open:
            frames = self._item_frame("response.reasoning_summary_text.done", item, summary_index=0,
                                      text=text)
            frames += self._item_frame("response.reasoning_summary_part.done", item, summary_index=0,
                                       part={"type": "summary_text", "text": text})
        return frames, reasoning_item(item.item_id, block)

    def _finish_custom_tool_call(self, item: _OpenItem, text: str) -> tuple[bytes, dict[str, Any]]:
        tool_input = _custom_input_of(text)
        frames = b""  # if the streamed deltas went astray, the done events still carry the truth
        if tool_input.startswith(item.streamed_input):
            frames = self._custom_input_delta(item, tool_input[len(item.streamed_input):])
        frames += self._item_frame("response.custom_tool_call_input.done", item, input=tool_input)
        return frames, custom_tool_call_item(item.item_id, *item.call, tool_input)

    def _custom_input_delta(self, item: _OpenItem, text: str) -> bytes:
        if not text:
            return b""
        item.streamed_input += text
        return self._item_frame("response.custom_tool_call_input.delta", item, delta=text)

    def _finish_function_call(self, item: _OpenItem, text: str) -> tuple[bytes, dict[str, Any]]:
        arguments = text or "{}"  # a tool without parameters may stream no JSON at all
        frames = self._item_frame("response.function_call_arguments.done", item, arguments=arguments)
        return frames, function_call_item(item.item_id, *item.call, arguments)

    # ---- framing -------------------------------------------------------------------------------

    def _start(self) -> bytes:
        self._started = True
        response = self._response("in_progress")
        created = self._frame("response.created", response=response)
        return created + self._frame("response.in_progress", response=response)

    def _response(self, status: str, **fields: Any) -> dict[str, Any]:
        return response_object(response_id=f"resp_{self._stem()}", request=self._request,
                               created=self._created, status=status, output=list(self._output), **fields)

    def _stem(self) -> str:
        if self._base is None:
            self._base = response_base_id(None)
        return self._base

    def _item_frame(self, event_type: str, item: _OpenItem, **payload: Any) -> bytes:
        return self._frame(event_type, item_id=item.item_id, output_index=item.output_index, **payload)

    def _frame(self, event_type: str, **payload: Any) -> bytes:
        data = orjson.dumps({"type": event_type, "sequence_number": self._sequence, **payload})
        self._sequence += 1
        return b"event: " + event_type.encode() + b"\ndata: " + data + b"\n\n"


def _custom_input_of(arguments: str) -> str:
    """The streamed tool_use JSON, '{"input": "*** Begin Patch…"}', unwrapped to the raw text
    (left as is when a cut-short stream left it unparseable)."""
    try:
        return custom_input(orjson.loads(arguments or "{}"))
    except orjson.JSONDecodeError:
        return arguments
