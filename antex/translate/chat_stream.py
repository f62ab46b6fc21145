"""Anthropic SSE events -> OpenAI `chat.completion.chunk` frames, as each upstream event arrives.

Frames go out as `data: <json>\n\n`: the role first, then text, reasoning (`reasoning_content`)
and tool-call fragments (index, id, type and name first, then argument pieces), a chunk with the
finish_reason, the usage chunk when asked for, and `data: [DONE]`.
"""

from __future__ import annotations

import uuid
from typing import Any, Sequence

import orjson

from antex.translate.message_stream import MessageStream
from antex.translate.outcome import chat_usage, finish_reason


def chat_id(message_id: object) -> str:
    """msg_01AbC -> chatcmpl-01AbC: the same upstream message, recognisable in both logs."""
    if isinstance(message_id, str) and message_id:
        return "chatcmpl-" + message_id.removeprefix("msg_")
    return "chatcmpl-" + uuid.uuid4().hex


def _frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class ChatStream(MessageStream):
    """Anthropic events (see message_stream) -> chat.completion.chunk frames."""

    def __init__(self, *, model: str, created: int, include_usage: bool) -> None:
        super().__init__()
        self._model = model
        self._created = created
        self._include_usage = include_usage
        self._id: str | None = None  # from message_start's id; a random one only if it never comes
        self._text_frame: tuple[bytes, bytes, bytes] | None = None  # see _text
        self._tool_index: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index
        self._arguments_sent: set[int] = set()
        self._finish_sent = False

    def _message_start(self, message: dict[str, Any]) -> bytes:
        self._id = chat_id(message.get("id"))
        return self._chunk({"role": "assistant", "content": ""})

    def _block_start(self, index: int, block: dict[str, Any]) -> bytes:
        if block.get("type") == "tool_use":
            call_index = self._tool_index[index] = len(self._tool_index)
            return self._chunk({"tool_calls": [{
                "index": call_index,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }]})
        if block.get("type") == "text" and block.get("text"):
            return self._chunk({"content": block["text"]})
        return b""

    def _block_delta(self, index: int, delta: dict[str, Any]) -> bytes:
        kind = delta.get("type")
        if kind == "text_delta":
            return self._text(orjson.dumps(delta.get("text", "")))
        if kind == "thinking_delta":
            return self._chunk({"reasoning_content": delta.get("thinking", "")})
        if kind == "input_json_delta" and delta.get("partial_json") and index in self._tool_index:
            self._arguments_sent.add(index)
            return self._arguments(index, delta["partial_json"])
        return b""

    def _block_stop(self, index: int) -> bytes:
        """A tool call without input still gets parseable arguments."""
        if index in self._tool_index and index not in self._arguments_sent:
            return self._arguments(index, "{}")
        return b""

    def _message_delta(self) -> bytes:
        if self._finish_sent:
            return b""
        self._finish_sent = True
        return self._chunk({}, finish=finish_reason(self.stop_reason))

    def _complete(self) -> bytes:
        """The usage chunk (empty `choices`) when asked for, then [DONE]."""
        frames = b"" if self._finish_sent else self._chunk({}, finish=finish_reason(self.stop_reason))
        if self._include_usage:
            frames += _frame({**self._envelope([]), "usage": chat_usage(self.usage)})
        return frames + b"data: [DONE]\n\n"

    def _failure(self, error_type: str, message: str) -> bytes:
        """A data line holding `{"error": …}`: the openai SDK raises APIError on it. No [DONE]
        follows, so no client mistakes the stream for a finished one."""
        return _frame({"error": {"message": message, "type": error_type, "code": error_type}})

    def _arguments(self, index: int, piece: str) -> bytes:
        call = {"index": self._tool_index[index], "function": {"arguments": piece}}
        return self._chunk({"tool_calls": [call]})

    def _text_deltas(self, indexes: Sequence[bytes], texts: list[str], encoded: Sequence[bytes]) -> bytes:
        return self._text(*encoded)

    def _text(self, *encoded: bytes) -> bytes:
        """Text chunks (each text given JSON-encoded), the bulk of every stream: the same frames as
        _chunk builds, from bytes prepared once per stream and joined in one call."""
        if self._text_frame is None:
            marker = "\x00text\x00"
            frame = self._chunk({"content": marker})
            before, _, after = frame.partition(orjson.dumps(marker))
            self._text_frame = (before, after, after + before)
        before, after, between = self._text_frame
        return before + between.join(encoded) + after

    def _envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        if self._id is None:
            self._id = chat_id(None)
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }

    def _chunk(self, delta: dict[str, Any], *, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _frame(self._envelope([choice]))
