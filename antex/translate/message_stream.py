"""Reading Anthropic's Messages SSE stream one event at a time, for any OpenAI dialect.

`MessageStream` keeps what every dialect needs (usage, stop reason, whether the message really
ended) and the contract the routes rely on; subclasses only say what each event becomes.
Events read, one call per upstream SSE event:

    message_start        {"message": {"id": "msg_01…", "usage": {"input_tokens": 12, …}}}
    content_block_start  {"index": 1, "content_block": {"type": "tool_use", "id": "toolu_01…",
                          "name": "get_weather", "input": {}}}
    content_block_delta  {"index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\\"ci"}}
    content_block_stop   {"index": 1}
    message_delta        {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 40}}
    message_stop         {}
    error                {"error": {"type": "overloaded_error", "message": "Overloaded"}}
"""

from __future__ import annotations

from typing import Any, Sequence

from antex.translate.outcome import merge_usage

CUT_SHORT = "The upstream stream ended before the message was complete."


class MessageStream:
    """`event()` per upstream event, then `close()` when upstream ends or `fail()` when it breaks;
    each returns the bytes to write to the client now (b"" for nothing). After the end,
    everything returns b""."""

    def __init__(self) -> None:
        self.usage: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self._message_stopped = False
        self._ended = False

    def event(self, name: str, data: dict[str, Any]) -> bytes:
        if self._ended:
            return b""
        if name == "content_block_delta":  # nearly every event: checked before the rest
            return self._block_delta(data["index"], data.get("delta") or {})
        match name:
            case "message_start":
                message = data.get("message") or {}
                self.usage = merge_usage(self.usage, message.get("usage"))
                return self._message_start(message)
            case "content_block_start":
                return self._block_start(data["index"], data.get("content_block") or {})
            case "content_block_stop":
                return self._block_stop(data["index"])
            case "message_delta":
                self.usage = merge_usage(self.usage, data.get("usage"))
                self.stop_reason = (data.get("delta") or {}).get("stop_reason") or self.stop_reason
                return self._message_delta()
            case "message_stop":
                self._message_stopped = True
            case "error":
                error = data.get("error") or {}
                return self.fail(error.get("type") or "api_error", error.get("message") or "Upstream error.")
        return b""  # ping, and event types added after this was written

    def text_deltas(self, indexes: Sequence[bytes], texts: list[str], encoded: Sequence[bytes]) -> bytes | None:
        """Consecutive text_delta events read without parsing them (the bulk of every stream): each
        one's block index (digits), its text, and that text's JSON string literal as the upstream
        wrote it. None when the dialect needs them as parsed events, one by one."""
        if self._ended:
            return b""
        return self._text_deltas(indexes, texts, encoded)

    def close(self) -> bytes:
        """The closing frames; a stream that ended before message_stop was cut short and fails."""
        if self._ended:
            return b""
        if not self._message_stopped:
            return self.fail("api_error", CUT_SHORT)
        self._ended = True
        return self._complete()

    def fail(self, error_type: str, message: str) -> bytes:
        """Upstream failed mid-stream (an `error` event, a broken connection): end with an error
        the client's SDK raises, `error_type` being Anthropic's (overloaded_error, api_error…)."""
        if self._ended:
            return b""
        self._ended = True
        return self._failure(error_type, message)

    # ---- what each event becomes, per dialect ----------------------------------------------------

    def _message_start(self, message: dict[str, Any]) -> bytes:
        return b""

    def _block_start(self, index: int, block: dict[str, Any]) -> bytes:
        return b""

    def _block_delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return b""

    def _text_deltas(self, indexes: Sequence[bytes], texts: list[str], encoded: Sequence[bytes]) -> bytes | None:
        return None

    def _block_stop(self, index: int) -> bytes:
        return b""

    def _message_delta(self) -> bytes:
        return b""

    def _complete(self) -> bytes:
        raise NotImplementedError

    def _failure(self, error_type: str, message: str) -> bytes:
        raise NotImplementedError
