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

import aiohttp
import orjson
from aiohttp import web

from antex import gateway
from antex.appkeys import CONFIG
from antex.sse import DELTA_FRAME, MalformedStream, SSEReader, UsageMeter, parse

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
        for raw in self._reader.frames(chunk):
            if raw.startswith(DELTA_FRAME):  # nearly every frame: only its size counts (see UsageMeter.observe)
                meter.count_delta(len(raw) - DELTA_HEAD_BYTES)
                continue
            frame = parse(raw)
            if frame is not None:
                meter.observe(*frame)

    def close(self) -> bytes:
        return b""

    def fail(self, message: str) -> bytes:
        error = {"type": "error", "error": {"type": "api_error", "message": message}}
        return b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"


class Translated:
    """Anthropic SSE in, another format out: each event parsed once, metered and translated."""

    __slots__ = ("meter", "_reader", "_stream")

    def __init__(self, meter: UsageMeter, stream) -> None:
        self.meter = meter
        self._reader = SSEReader()
        self._stream = stream  # translate.chat_stream.ChatStream or translate.responses_stream.ResponsesStream

    def translate(self, chunk: bytes) -> bytes:
        out = []
        meter, stream = self.meter, self._stream
        for raw in self._reader.frames(chunk):
            if raw.startswith(DELTA_FRAME) and raw.find(b"\n", DELTA_HEAD_BYTES) < 0:  # nearly every frame
                event, data = "content_block_delta", raw[DELTA_HEAD_BYTES:]
            else:
                frame = parse(raw)
                if frame is None:
                    continue
                event, data = frame
            try:
                payload = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise MalformedStream(f"{event} data is not JSON") from None
            if not isinstance(payload, dict):
                raise MalformedStream(f"{event} data is not a JSON object")
            if event == "content_block_delta":  # the meter only counts these (see UsageMeter.observe)
                meter.count_delta(len(data))
            else:
                meter.message(event, payload)
            try:
                out.append(stream.event(event, payload))
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                raise MalformedStream(f"{event} event has an unexpected shape: {exc!r}") from None
        return b"".join(out)

    def observe(self, chunk: bytes) -> None:
        pass

    def close(self) -> bytes:
        return self._stream.close()

    def fail(self, message: str) -> bytes:
        return self._stream.fail("api_error", message)


async def relay_stream(request: web.Request, response: aiohttp.ClientResponse, call: gateway.Call,
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


async def _pump(request: web.Request, response: aiohttp.ClientResponse, client: web.StreamResponse,
                relay: Relay) -> tuple[bool, str | None]:
    """Copy upstream chunks to the client until the end; returns (client gone, failure)."""
    cancel_when_gone = request.app[CONFIG].upstream.on_client_disconnect == "cancel"
    client_gone = False
    try:
        async for chunk in response.content.iter_any():
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
    except aiohttp.ClientError:
        return client_gone, BROKEN
    except MalformedStream as exc:
        log.warning("malformed upstream stream: %s", exc)
        return client_gone, MALFORMED
    return client_gone, None


async def _finish(client: web.StreamResponse, tail: bytes) -> bool:
    """End the client's stream with `tail`; True if the client had left."""
    try:
        if tail:
            await client.write(tail)
        await client.write_eof()
    except ConnectionError:
        return True
    return False

