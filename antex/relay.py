"""Streams from the upstream to the client, as they arrive: one loop for every front door.

A `Relay` decides what the client gets for each upstream chunk: the chunk itself (Anthropic
pass-through, watched for usage after it is written) or its translation (OpenAI doors). The loop
here handles the rest the same way for all: a client that hangs up, a stalled or broken upstream,
a stream that ends early, and settling the request exactly once.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import orjson
from aiohttp import web

from antex import gateway
from antex.upstream import client as http_client
from antex.appkeys import CONFIG
from antex.sse import (DELTA_FRAME, DELTA_FRAMING, DELTA_RUN, TEXT_DELTA, TEXT_DELTA_RUN, MalformedStream, SSEReader,
                       UsageMeter, parse)

log = logging.getLogger("antex.relay")

DELTA_HEAD_BYTES = len(DELTA_FRAME)
STALLED = "The upstream API stalled mid-stream and was abandoned. Try again."
BROKEN = "The upstream API broke off the stream. Try again."
MALFORMED = "The upstream API sent a malformed stream. Try again."
ENDED_EARLY = "The upstream API ended the stream early. Try again."


class Relay(Protocol):
    meter: UsageMeter

    def translate(self, chunk: bytes) -> bytes:
        """What to write to the client for this upstream chunk."""

    def observe(self, chunk: bytes) -> None:
        """Watch a chunk after it was written (pass-through reads usage here)."""

    def close(self) -> bytes:
        """The stream's normal ending."""

    def fail(self, message: str) -> bytes:
        """The stream's ending when the upstream failed mid-way."""


class PassThrough:
    """Anthropic SSE out as it came in, byte for byte; usage read from a copy."""

    __slots__ = ("meter", "_reader")

    def __init__(self, meter: UsageMeter) -> None:
        self.meter = meter
        self._reader = SSEReader()

    def translate(self, chunk: bytes) -> bytes:
        return chunk

    def observe(self, chunk: bytes) -> None:
        meter = self.meter
        data = self._reader.complete(chunk)
        position, end = 0, len(data)
        while position < end:
            run = DELTA_RUN.match(data, position)
            if run is not None:  # the bulk of the stream: only its size counts (see UsageMeter.observe)
                stop = run.end()
                frames = data.count(DELTA_FRAME, position, stop)  # once per frame: data lines hold no LF
                meter.count_deltas(stop - position - frames * DELTA_FRAMING, frames)
            else:
                stop = _frame_end(data, position, end)
                frame = parse(data[position:stop - 2])
                if frame is not None:
                    meter.observe(*frame)
            position = stop

    def close(self) -> bytes:
        return b""

    def fail(self, message: str) -> bytes:
        error = {"type": "error", "error": {"type": "api_error", "message": message}}
        return b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"


class Translated:
    """Anthropic SSE in, another format out: each event parsed once, metered and translated;
    runs of plain text deltas (most of a stream) are cut by a regex and translated whole."""

    __slots__ = ("meter", "_reader", "_stream")

    def __init__(self, meter: UsageMeter, stream) -> None:
        self.meter = meter
        self._reader = SSEReader()
        self._stream = stream  # translate.chat_stream.ChatStream or translate.responses_stream.ResponsesStream

    def translate(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        data = self._reader.complete(chunk)
        position, end = 0, len(data)
        while position < end:
            run = TEXT_DELTA_RUN.match(data, position)
            if run is not None:
                stop = run.end()
                if not self._text_run(data, position, stop, out):
                    for frame in data[position:stop - 2].split(b"\n\n"):  # one by one, the general way
                        self._frame(frame, out)
            else:
                stop = _frame_end(data, position, end)
                self._frame(data[position:stop - 2], out)
            position = stop
        return b"".join(out)

    def _text_run(self, data: bytes, start: int, stop: int, out: list[bytes]) -> bool:
        """Translate consecutive text deltas at once; False when they need the general path."""
        indexes, literals = zip(*TEXT_DELTA.findall(data, start, stop))
        try:  # one decode checks every literal: each must be exactly one JSON string
            texts = orjson.loads(b"[" + b",".join(literals) + b"]")
        except orjson.JSONDecodeError:
            return False
        if len(texts) != len(literals):
            return False
        frames = self._stream.text_deltas(indexes, texts, literals)
        if frames is None:
            return False
        self.meter.count_deltas(stop - start - len(literals) * DELTA_FRAMING, len(literals))
        out.append(frames)
        return True

    def _frame(self, raw: bytes, out: list[bytes]) -> None:
        """One frame the general way: parsed, metered, translated."""
        if raw.startswith(DELTA_FRAME) and raw.find(b"\n", DELTA_HEAD_BYTES) < 0:
            event, data = "content_block_delta", raw[DELTA_HEAD_BYTES:]
        else:
            frame = parse(raw)
            if frame is None:
                return
            event, data = frame
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise MalformedStream(f"{event} data is not JSON") from None
        if not isinstance(payload, dict):
            raise MalformedStream(f"{event} data is not a JSON object")
        if event == "content_block_delta":  # the meter only counts these (see UsageMeter.observe)
            self.meter.count_delta(len(data))
        else:
            self.meter.message(event, payload)
        try:
            out.append(self._stream.event(event, payload))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise MalformedStream(f"{event} event has an unexpected shape: {exc!r}") from None

    def observe(self, chunk: bytes) -> None:
        pass

    def close(self) -> bytes:
        return self._stream.close()

    def fail(self, message: str) -> bytes:
        return self._stream.fail("api_error", message)


def _frame_end(data: bytes, start: int, end: int) -> int:
    """Where the frame at `start` ends, its blank line included (`data` is SSEReader.complete's)."""
    stop = data.find(b"\n\n", start)
    return end + 2 if stop < 0 else stop + 2  # a trailing lone LF (from LF LF LF) is an empty frame


async def relay_stream(request: web.Request, response: http_client.Response, call: gateway.Call,
                       relay: Relay, headers) -> web.StreamResponse:
    """Send the client `relay`'s rendering of the upstream stream; settle the call at the end."""
    outcome = "upstream_error"
    try:
        async with response:
            client = web.StreamResponse(status=200, headers=headers)
            await client.prepare(request)
            client_gone, failure = await _pump(request, response, client, relay)
            meter = relay.meter
            if failure is None and not client_gone and not meter.finished and meter.error is None:
                failure = ENDED_EARLY
            if not client_gone:
                tail = relay.fail(failure) if failure else relay.close()
                client_gone = await _finish(client, tail)
        if client_gone:
            outcome = "client_disconnected"
        elif failure is None and relay.meter.error is None:
            outcome = "complete"
        return client
    except asyncio.CancelledError:
        outcome = "client_disconnected"  # cancelled on purpose: the client left, in "cancel" mode
        raise
    finally:
        gateway.settle(request, call, relay.meter, outcome)


async def _pump(request: web.Request, response: http_client.Response, client: web.StreamResponse,
                relay: Relay) -> tuple[bool, str | None]:
    """Copy upstream chunks to the client until the end; returns (client gone, failure)."""
    cancel_when_gone = request.app[CONFIG].upstream.on_client_disconnect == "cancel"
    client_gone = False
    try:
        async for chunk in response.iter_chunks():
            out = relay.translate(chunk)
            if not client_gone and out:
                try:
                    await client.write(out)
                except ConnectionError:
                    client_gone = True
                    if cancel_when_gone:
                        break
            relay.observe(chunk)
    except TimeoutError:
        return client_gone, STALLED
    except http_client.UpstreamError:
        return client_gone, BROKEN
    except MalformedStream as exc:
        log.warning("malformed upstream stream: %s", exc)
        return client_gone, MALFORMED
    return client_gone, None


async def _finish(client: web.StreamResponse, tail: bytes) -> bool:
    """End the client's stream with `tail`; True if the client had left."""
    try:
        await client.write_eof(tail)  # one write: the tail and the end of the chunked body together
    except ConnectionError:
        return True
    return False

