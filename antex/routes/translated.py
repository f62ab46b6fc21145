"""The flow the OpenAI front doors share: translate in, the usual gateway flow, translate back.

Requests through these doors are metered, limited and refused exactly like /v1/messages (same
credit events, same windows, same errors), only rendered in OpenAI's error shape.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import orjson
from aiohttp import web

from antex import gateway
from antex.config import Model
from antex.errors import AntexError, openai_body, translate_upstream_error
from antex.relay import Translated, relay_stream
from antex.sse import UsageMeter
from antex.translate import TranslationError

MESSAGES = "/v1/messages"
# max_tokens when an OpenAI request names none (capped by the key's plan): room for real work.
DEFAULT_MAX_TOKENS = {"haiku": 16000, "sonnet": 32000, "opus": 32000}
SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}


@dataclass(frozen=True)
class Door:
    """What makes one OpenAI front door different from another."""

    endpoint: str
    # (client body, default max_tokens) -> Anthropic Messages body; raises TranslationError
    to_messages: Callable[[dict, int], dict]
    # (Anthropic message, client body, model name, created) -> the client's response body
    to_response: Callable[[dict, dict, str, int], dict]
    # (client body, model name, created) -> a stream translator (event/close/fail)
    new_stream: Callable[[dict, str, int], Any]


async def handle(request: web.Request, door: Door) -> web.StreamResponse:
    key = gateway.authenticate(request)
    raw = await gateway.read_body(request)
    body = gateway.parse_object(raw)
    model_name = gateway.field(body, "model", str, what="a string naming a model")
    model = gateway.resolve(request, key, model_name)
    default_max = min(DEFAULT_MAX_TOKENS.get(model.tier, 16000), key.limits.max_tokens)
    try:
        anthropic = door.to_messages(body, default_max)
    except TranslationError as exc:
        raise AntexError("invalid_request_error", exc.message, param=exc.param) from None
    anthropic["model"] = gateway.upstream_model_name(model_name, model)
    stream = anthropic.get("stream") is True
    call = await gateway.admit(request, key, model=model, max_tokens=anthropic["max_tokens"],
                               endpoint=door.endpoint, body_bytes=len(raw))
    try:
        response = await gateway.open_upstream(request, MESSAGES, orjson.dumps(anthropic))
    except BaseException:
        gateway.settle(request, call, None, "upstream_error")
        raise
    created = int(time.time())
    if response.status != 200:
        return await _upstream_error(request, call, response)
    if stream:
        relay = Translated(call.meter(request), door.new_stream(body, model_name, created))
        return await gateway.survive_disconnect(request, relay_stream(request, response, call, relay, SSE_HEADERS))
    return await _whole(request, call, response, door, body, model_name, created, model)


async def _whole(request: web.Request, call: gateway.Call, response, door: Door, body: dict, model_name: str,
                 created: int, model: Model) -> web.Response:
    meter = UsageMeter()
    outcome = "upstream_error"
    try:
        async with response:
            payload = await gateway.read_upstream(request, response)
        try:
            message = orjson.loads(payload)
            meter.usage = message.get("usage") or {}
            translated = door.to_response(message, body, model_name, created)
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
            raise AntexError("bad_gateway", "The upstream API answered with a message Antex could not read. Try again.") from None
        meter.finished = True
        outcome = "complete"
        return web.Response(body=orjson.dumps(translated), content_type="application/json")
    finally:
        gateway.settle(request, call, meter, outcome)


async def _upstream_error(request: web.Request, call: gateway.Call, response) -> web.Response:
    """An upstream HTTP error, with its own status, in OpenAI's error shape."""
    try:
        async with response:
            payload = await gateway.read_upstream(request, response)
    finally:
        gateway.settle(request, call, None, "upstream_error")
    error_type, message = translate_upstream_error(payload)
    headers = {name: response.headers[name] for name in ("retry-after", "x-should-retry") if name in response.headers}
    return web.Response(status=response.status, body=openai_body(error_type, message), content_type="application/json",
                        headers=headers)
