"""Incremental SSE framing, and usage read from a copy of an Anthropic stream.

The bytes forwarded to the client are never touched; this module only watches them. A frame
looks like:

    event: message_delta
    data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}

"""
from __future__ import annotations

import re
from typing import Callable

import orjson

_FRAME_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_EVENT_NAMES = {name.encode(): name for name in (
    "message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta",
    "message_stop", "ping", "error")}  # decoded once, not per frame
DELTA_ENVELOPE_BYTES = 60  # a content_block_delta's data minus its text: {"type":"content_block_delta",…
DELTA_FRAME = b"event: content_block_delta\ndata: "  # how nearly every frame of a stream starts
DELTA_FRAMING = len(DELTA_FRAME) + 2  # a content_block_delta frame's bytes around its data
# Runs of consecutive content_block_delta frames, the bulk of every stream, are handled whole (see
# relay). DELTA_RUN: any deltas, each with more data than the envelope (so UsageMeter.count_deltas
# is exact). TEXT_DELTA: one text delta exactly as Anthropic writes it, group 1 its block index and
# group 2 its text as a JSON string literal (one line: JSON escapes newlines); TEXT_DELTA_RUN: a run
# of them. The regexes only cut; the caller decodes the literals, which checks them.
DELTA_RUN = re.compile(rb"(?:event: content_block_delta\ndata: \{[^\n]{60,}\n\n)+")
_TEXT_DELTA = (rb'event: content_block_delta\ndata: \{"type":"content_block_delta","index":(%s\d{1,9}),'
               rb'"delta":\{"type":"text_delta","text":(%s"[^\n]*")\}\}\n\n')
TEXT_DELTA = re.compile(_TEXT_DELTA % (b"", b""))
TEXT_DELTA_RUN = re.compile(rb"(?:%s)+" % (_TEXT_DELTA % (b"?:", b"?:")))
MAX_FRAME_BYTES = 16 * 1024 * 1024  # a frame larger than this is not SSE we can read
USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
                "cache_creation", "server_tool_use")


class MalformedStream(Exception):
    """The upstream sent bytes that are not SSE."""


class SSEReader:
    """Cuts a byte stream into (event name, data bytes) frames, however the bytes are chunked."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        """The (event, data) frames `chunk` completes."""
        frames = [parse(raw) for raw in self.frames(chunk)]
        if None in frames:  # comments and keep-alives
            frames = [frame for frame in frames if frame is not None]
        return frames

    def complete(self, chunk: bytes) -> bytes:
        """The whole frames `chunk` completes, as one LF-ended bytes string ending in a blank line
        (b"" when none): for callers that handle runs of frames at once."""
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:  # rare: normalised frame by frame
            return b"".join([frame + b"\n\n" for frame in self.frames(chunk)])
        end = buffer.rfind(b"\n\n")
        if end < 0:
            done, rest = b"", buffer
        else:
            done, rest = buffer[:end + 2], buffer[end + 2:]
        if len(rest) > MAX_FRAME_BYTES:
            raise MalformedStream("an SSE frame exceeded 16 MiB")
        self._buffer = rest
        return done

    def frames(self, chunk: bytes) -> list[bytes]:
        """The raw frames `chunk` completes, each on its own, with LF line ends (the relays read
        them all at once through complete())."""
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            frames, start = [], 0
            for match in _FRAME_END.finditer(buffer):  # a complete frame: its CRs are safe to normalise
                frames.append(buffer[start:match.start()].replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
                start = match.end()
            rest = buffer[start:]
        else:
            # Anthropic's streams use bare LFs: a plain split is ten times cheaper than the regex.
            frames = buffer.split(b"\n\n")
            rest = frames.pop()
        if len(rest) > MAX_FRAME_BYTES:
            raise MalformedStream("an SSE frame exceeded 16 MiB")
        self._buffer = rest
        return frames

    @property
    def pending(self) -> bytes:
        """Bytes of an unfinished frame (a stream cut mid-frame leaves some)."""
        return self._buffer


def parse(frame: bytes) -> tuple[str, bytes] | None:
    """(event, data) of one raw frame from SSEReader.frames; None for comments and keep-alives."""
    return _event_and_data(frame) or parse_frame(frame)


def _event_and_data(frame: bytes) -> tuple[str, bytes] | None:
    """The common frame, exactly `event: NAME` LF `data: DATA`, cut without a line loop; else None."""
    if not frame.startswith(b"event: "):
        return None
    newline = frame.find(b"\n")
    if newline < 0 or not frame.startswith(b"data: ", newline + 1) or frame.find(b"\n", newline + 1) >= 0:
        return None
    name = frame[7:newline]
    return _EVENT_NAMES.get(name) or name.decode("utf-8", "replace"), frame[newline + 7:]


def parse_frame(frame: bytes) -> tuple[str, bytes] | None:
    """(event, data) of one frame; None for comments and keep-alives."""
    event = "message"
    data: list[bytes] = []
    for line in frame.splitlines():
        if not line or line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"event":
            event = value.decode("utf-8", "replace")
        elif name == b"data":
            data.append(value)
    if not data:
        return None
    return event, b"\n".join(data)


class UsageMeter:
    """Usage of an Anthropic response: `message_start` usage, then each `message_delta` usage
    overwriting it field by field (the delta's counts are cumulative, never summed)."""

    __slots__ = ("usage", "stop_reason", "error", "finished", "message_id", "streamed_chars", "on_start")

    def __init__(self, on_start: Callable[[dict], None] | None = None) -> None:
        self.on_start = on_start  # called once with message_start's usage
        self.usage: dict = {}
        self.stop_reason: str | None = None
        self.error: dict | None = None
        self.finished = False
        self.message_id: str | None = None
        self.streamed_chars = 0  # text/JSON/thinking characters seen in deltas: an estimate's base

    def observe(self, event: str, data: bytes) -> dict | None:
        """Take one frame; returns the parsed payload when it was parsed (None for cheap frames)."""
        if event == "content_block_delta":
            self.count_delta(len(data))
            return None
        if event not in ("message_start", "message_delta", "message_stop", "error"):
            return None
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise MalformedStream(f"{event} data is not JSON") from None
        self.message(event, payload)
        return payload

    def count_delta(self, data_bytes: int) -> None:
        """Count a content_block_delta by its size, without parsing: its data minus the fixed envelope
        estimates the text generated (what a client that hangs up in "cancel" mode is charged at least)."""
        self.streamed_chars += max(data_bytes - DELTA_ENVELOPE_BYTES, 1)

    def count_deltas(self, data_bytes: int, frames: int) -> None:
        """count_delta for a run of `frames` deltas, each with more data than the envelope."""
        self.streamed_chars += data_bytes - frames * DELTA_ENVELOPE_BYTES

    def message(self, event: str, payload: dict) -> None:
        """Take one parsed event (the translators parse every frame and call this directly)."""
        if not isinstance(payload, dict):
            return
        if event == "message_start":
            message = payload.get("message")
            if isinstance(message, dict):
                self.message_id = message.get("id")
                self._merge(message.get("usage"))
                if self.on_start is not None and self.usage:
                    self.on_start(dict(self.usage))
        elif event == "message_delta":
            self._merge(payload.get("usage"))
            delta = payload.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                self.stop_reason = delta["stop_reason"]
        elif event == "message_stop":
            self.finished = True
        elif event == "error":
            error = payload.get("error")
            self.error = error if isinstance(error, dict) else {"type": "api_error", "message": "upstream error"}

    def _merge(self, usage: object) -> None:
        """Field by field; a nested object (cache_creation, server_tool_use) too, so a delta that
        names only web_search_requests keeps the web_fetch_requests message_start gave."""
        if isinstance(usage, dict):
            for name in USAGE_FIELDS:
                value = usage.get(name)
                if value is None:
                    continue
                seen = self.usage.get(name)
                if isinstance(value, dict) and isinstance(seen, dict):
                    value = {**seen, **{k: v for k, v in value.items() if v is not None}}
                self.usage[name] = value
