"""POST /v1/messages and /v1/messages/count_tokens: the Anthropic front door, passed through.

The body goes upstream byte for byte (unless a model alias must be rewritten, or max_tokens lowered
to the plan's cap), and a stream comes back chunk by chunk as it arrives; usage is read from a copy
of the bytes, never re-encoded.
"""
from __future__ import annotations

import orjson
from aiohttp import web

from antex import gateway, prepare
from antex.upstream import client as http_client
from antex.appkeys import ADMISSION
from antex.relay import PassThrough, relay_stream
from antex.routes import expect
from antex.sse import UsageMeter
from antex.upstream.headers import response_headers

MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"


def setup(app: web.Application) -> None:
    app.router.add_post(MESSAGES, create_message, expect_handler=expect)
    app.router.add_post(COUNT_TOKENS, count_tokens, expect_handler=expect)


async def create_message(request: web.Request) -> web.StreamResponse:
    key = gateway.authenticate(request)
    call = await gateway.admit(request, key, MESSAGES)  # before a byte of the body is read
    try:
        raw = await gateway.read_body(request, key)
        prepared = await gateway.run_job(request, prepare.messages, raw, gateway.terms(request, key))
        model = gateway.accept(request, call, prepared)
        gateway.confirm(request, call, len(raw))
    except BaseException:
        call.ticket.release()  # refused before the journal: nothing to charge
        raise
    try:
        stream, conversation = prepared.stream, prepared.conversation
        raw = raw if prepared.upstream is None else prepared.upstream
        del prepared
        response = await gateway.open_upstream(request, MESSAGES, raw, model, conversation=conversation, stream=stream)
        del raw  # a stream may run for minutes: keep not even the body's bytes
    except BaseException:
        gateway.settle(request, call, None, "upstream_error")
        raise
    if stream and response.status == 200 and _is_event_stream(response):
        relay = relay_stream(request, response, call, PassThrough(call.meter(request)), response_headers(response.headers))
        return await gateway.survive_disconnect(request, relay)
    meter = UsageMeter()
    outcome = "upstream_error"
    try:
        async with response:
            payload = await gateway.read_upstream(request, response)
        if response.status == 200:
            meter.usage = _usage_of(payload)
            meter.finished = True
            outcome = "complete"
        return web.Response(status=response.status, body=payload, headers=response_headers(response.headers))
    finally:
        gateway.settle(request, call, meter, outcome)


def _is_event_stream(response: http_client.Response) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")


def _usage_of(payload: bytes) -> dict:
    """The `usage` of a non-streaming Messages response, e.g. {"usage": {"input_tokens": 9, ...}}."""
    try:
        usage = orjson.loads(payload).get("usage")
    except (orjson.JSONDecodeError, AttributeError):
        return {}
    return usage if isinstance(usage, dict) else {}


async def count_tokens(request: web.Request) -> web.Response:
    """Forwarded, authenticated, not metered; the client's address counts against max_ips."""
    key = gateway.authenticate(request)
    request.app[ADMISSION].check_key(key)
    await gateway.check_ip(request, key)  # before a byte of the body is read
    raw = await gateway.read_body(request, key)
    prepared = await gateway.run_job(request, prepare.count_tokens, raw, gateway.terms(request, key))
    model = gateway.accept(request, None, prepared)
    raw = raw if prepared.upstream is None else prepared.upstream
    response = await gateway.open_upstream(request, COUNT_TOKENS, raw, model, conversation=prepared.conversation)
    async with response:
        payload = await gateway.read_upstream(request, response)
        return web.Response(status=response.status, body=payload, headers=response_headers(response.headers))
