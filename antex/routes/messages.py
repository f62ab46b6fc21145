"""POST /v1/messages and /v1/messages/count_tokens: the Anthropic front door, passed through.

The body goes upstream byte for byte (unless a model alias must be rewritten, or max_tokens lowered
to the plan's cap), and a stream comes back chunk by chunk as it arrives; usage is read from a copy
of the bytes, never re-encoded.
"""
from __future__ import annotations

import orjson
from aiohttp import web

from antex import gateway, request_body
from antex.upstream import client as http_client
from antex.appkeys import ADMISSION
from antex.errors import AntexError
from antex.relay import PassThrough, relay_stream
from antex.routes import expect
from antex.sse import UsageMeter
from antex.upstream.headers import response_headers

MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"
# The fields Antex reads from a body it forwards as sent: each must appear once, or the upstream
# might read another value than the one Antex checked.
READ_FIELDS = request_body.quoted("model", "max_tokens", "stream", "messages")
COUNT_FIELDS = request_body.quoted("model")


def setup(app: web.Application) -> None:
    app.router.add_post(MESSAGES, create_message, expect_handler=expect)
    app.router.add_post(COUNT_TOKENS, count_tokens, expect_handler=expect)


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
    call = await gateway.admit(request, key, MESSAGES)  # before a byte of the body is read
    try:
        raw = await gateway.read_body(request, key)
        body = gateway.parse_object(raw, READ_FIELDS)
        model_name, max_tokens, stream = validate(body)
        model = gateway.choose_model(request, call, model_name)
        max_tokens = gateway.serve_max_tokens(request, key, model, max_tokens)
        gateway.confirm(request, call, len(raw))
    except BaseException:
        call.ticket.release()  # refused before the journal: nothing to charge
        raise
    try:
        raw = gateway.upstream_body(raw, body, model, max_tokens)
        response = await gateway.open_upstream(request, MESSAGES, raw, model, client_body=body, stream=stream)
        del body, raw  # a stream may run for minutes: keep neither the parsed body nor its bytes
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
    body = gateway.parse_object(raw, COUNT_FIELDS)
    model = gateway.resolve(request, key, gateway.field(body, "model", str, what="a string naming a model"))
    raw = gateway.upstream_body(raw, body, model)
    response = await gateway.open_upstream(request, COUNT_TOKENS, raw, model, client_body=body)
    async with response:
        payload = await gateway.read_upstream(request, response)
        return web.Response(status=response.status, body=payload, headers=response_headers(response.headers))
