"""POST /v1/messages and /v1/messages/count_tokens: the Anthropic front door, passed through.

The body goes upstream byte for byte (unless a model alias must be rewritten), and a stream comes
back chunk by chunk as it arrives; usage is read from a copy of the bytes, never re-encoded.
"""
from __future__ import annotations

import asyncio
import logging

import aiohttp
import orjson
from aiohttp import web

from antex import gateway, upstream
from antex.appkeys import ADMISSION, CONFIG
from antex.errors import AntexError
from antex.sse import MalformedStream, SSEReader, UsageMeter

log = logging.getLogger("antex.messages")

MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"


def setup(app: web.Application) -> None:
    app.router.add_post(MESSAGES, create_message)
    app.router.add_post(COUNT_TOKENS, count_tokens)


def validate(body: dict) -> tuple[str, int, bool]:
    """(model, max_tokens, stream) of a Messages request, or invalid_request_error."""
    model = gateway.field(body, "model", str, what="a string naming a model")
    gateway.field(body, "messages", list, what="a list of messages")
    max_tokens = gateway.field(body, "max_tokens", int, what="a positive integer")
    if max_tokens < 1:
        raise AntexError("invalid_request_error", "max_tokens: must be a positive integer.", param="max_tokens")
    stream = gateway.field(body, "stream", bool, required=False, what="true or false") or False
    return model, max_tokens, stream


async def create_message(request: web.Request) -> web.StreamResponse:
    key = gateway.authenticate(request)
    raw = await gateway.read_body(request)
    body = gateway.parse_object(raw)
    model_name, max_tokens, stream = validate(body)
    call = await gateway.admit(request, key, model_name=model_name, max_tokens=max_tokens, endpoint=MESSAGES)
    try:
        raw = gateway.with_upstream_model(raw, body, call.model)
        response = await gateway.open_upstream(request, MESSAGES, raw)
    except BaseException:
        gateway.settle(request, call, None, "upstream_error")
        raise
    if stream and response.status == 200 and _is_event_stream(response):
        return await gateway.survive_disconnect(request, relay_stream(request, response, call))
    meter = UsageMeter()
    outcome = "upstream_error"
    try:
        async with response:
            payload = await gateway.read_upstream(request, response)
        if response.status == 200:
            meter.usage = _usage_of(payload)
            meter.finished = True
            outcome = "complete"
        return web.Response(status=response.status, body=payload, headers=upstream.response_headers(response.headers))
    finally:
        gateway.settle(request, call, meter, outcome)


def _is_event_stream(response: aiohttp.ClientResponse) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")


def _usage_of(payload: bytes) -> dict:
    """The `usage` of a non-streaming Messages response, e.g. {"usage": {"input_tokens": 9, ...}}."""
    try:
        usage = orjson.loads(payload).get("usage")
    except (orjson.JSONDecodeError, AttributeError):
        return {}
    return usage if isinstance(usage, dict) else {}


async def relay_stream(request: web.Request, response: aiohttp.ClientResponse, call: gateway.Call) -> web.StreamResponse:
    """Forward every chunk as it arrives, watching a copy for usage; settles the call at the end."""
    meter = UsageMeter()
    outcome = "upstream_error"
    try:
        async with response:
            client = web.StreamResponse(status=200, headers=upstream.response_headers(response.headers))
            await client.prepare(request)
            client_gone, failure = await _pump(request, response, client, meter)
            if failure is None and not client_gone and not meter.finished and meter.error is None:
                failure = "The upstream API ended the stream early. Try again."
            if not client_gone:
                client_gone = await _finish(client, failure)
        if client_gone:
            outcome = "client_disconnected"
        elif failure is None and meter.error is None:
            outcome = "complete"
        return client
    except asyncio.CancelledError:
        outcome = "client_disconnected"  # cancelled on purpose: the client left, in "cancel" mode
        raise
    finally:
        gateway.settle(request, call, meter, outcome)


async def _pump(request: web.Request, response: aiohttp.ClientResponse, client: web.StreamResponse,
                meter: UsageMeter) -> tuple[bool, str | None]:
    """Copy upstream chunks to the client until the end; returns (client gone, failure)."""
    reader = SSEReader()
    cancel_when_gone = request.app[CONFIG].upstream.on_client_disconnect == "cancel"
    client_gone = False
    try:
        async for chunk in response.content.iter_any():
            if not client_gone:
                try:
                    await client.write(chunk)
                except ConnectionError:
                    client_gone = True
                    if cancel_when_gone:
                        break
            for event, data in reader.feed(chunk):
                meter.observe(event, data)
    except TimeoutError:
        return client_gone, "The upstream API stalled mid-stream and was abandoned. Try again."
    except aiohttp.ClientError:
        return client_gone, "The upstream API broke off the stream. Try again."
    except MalformedStream as exc:
        log.warning("malformed upstream stream: %s", exc)
        return client_gone, "The upstream API sent a malformed stream. Try again."
    return client_gone, None


async def _finish(client: web.StreamResponse, failure: str | None) -> bool:
    """End the client's stream, with an error event when the upstream failed; True if it left."""
    try:
        if failure:
            await client.write(b"event: error\ndata: " + _error_event(failure) + b"\n\n")
        await client.write_eof()
    except ConnectionError:
        return True
    return False


def _error_event(message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": "api_error", "message": message}})


async def count_tokens(request: web.Request) -> web.Response:
    """Forwarded, authenticated, not metered."""
    key = gateway.authenticate(request)
    request.app[ADMISSION].check_key(key)
    raw = await gateway.read_body(request)
    body = gateway.parse_object(raw)
    model_name = gateway.field(body, "model", str, what="a string naming a model")
    model = request.app[ADMISSION].check_model(key, model_name)
    raw = gateway.with_upstream_model(raw, body, model)
    response = await gateway.open_upstream(request, COUNT_TOKENS, raw)
    async with response:
        payload = await gateway.read_upstream(request, response)
        return web.Response(status=response.status, body=payload, headers=upstream.response_headers(response.headers))
