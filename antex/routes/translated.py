"""The flow the OpenAI front doors share: translate in, the usual gateway flow, translate back.

Requests through these doors are metered, limited and refused exactly like /v1/messages (same
credit events, same windows, same errors), only rendered in OpenAI's error shape.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web

from antex import gateway, request_body
from antex.auth import KeyRecord
from antex.errors import AntexError, openai_body, translate_upstream_error
from antex.relay import Translated, relay_stream
from antex.sse import UsageMeter
from antex.translate import TranslationError

MESSAGES = "/v1/messages"
# max_tokens when an OpenAI request names none (capped by the key's plan and the model's own
# limit): room for real work.
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
    # (client body, model name, created) -> a stream translator (event/close/fail; `final` once closed)
    new_stream: Callable[[dict, str, int], Any]
    # Stored state (the Responses API's): (request, key, client body) -> (the body to translate, a
    # memo for `keep`), the body's references to stored items and responses filled in...
    recall: Callable[[web.Request, KeyRecord, dict], Awaitable[tuple[dict, Any]]] | None = None
    # ...and (request, key, memo, the final response body) -> None, keeping what should be kept.
    keep: Callable[[web.Request, KeyRecord, Any, dict], None] | None = None


# Every top-level field the translators read (antex/translate/): each must appear once. The
# upstream gets Antex's own encoding of the translation, but the client must not be able to
# send a request that two parsers read differently.
READ_FIELDS = request_body.quoted(
    "model", "messages", "input", "instructions", "max_tokens", "max_completion_tokens", "max_output_tokens", "stream",
    "stream_options", "tools", "tool_choice", "parallel_tool_calls", "stop", "temperature", "top_p", "response_format",
    "reasoning_effort", "reasoning", "text", "n", "user", "metadata", "previous_response_id", "store")
# What the answers echo of the request: everything but the conversation itself, which a stream
# must not keep alive for its whole life.
CONVERSATION = ("messages", "input")


async def handle(request: web.Request, door: Door) -> web.StreamResponse:
    key = gateway.authenticate(request)
    call = await gateway.admit(request, key, door.endpoint)  # before a byte of the body is read
    try:
        raw = await gateway.read_body(request, key)
        body = gateway.parse_object(raw, READ_FIELDS)
        del raw
        model_name = gateway.field(body, "model", str, what="a string naming a model")
        model = gateway.choose_model(request, call, model_name)
        expanded, memo = await door.recall(request, key, body) if door.recall else (body, None)
        default_max = min(DEFAULT_MAX_TOKENS.get(model.tier, 16000), key.limits.max_tokens,
                          model.max_output_tokens or key.limits.max_tokens)
        try:
            anthropic = door.to_messages(expanded, default_max)
        except TranslationError as exc:
            raise AntexError("invalid_request_error", exc.message, param=exc.param) from None
        del expanded
        anthropic["model"] = gateway.upstream_model_name(model_name, model)
        max_tokens = gateway.serve_max_tokens(request, key, model, anthropic["max_tokens"])
        if max_tokens != anthropic["max_tokens"]:
            gateway.lower_max_tokens(anthropic, max_tokens)
        stream = anthropic.get("stream") is True
        upstream_body = orjson.dumps(anthropic)
        del anthropic
        gateway.confirm(request, call, len(upstream_body))
    except BaseException:
        call.ticket.release()  # refused before the journal: nothing to charge
        raise
    try:
        response = await gateway.open_upstream(request, MESSAGES, upstream_body, model, client_body=body, stream=stream)
        del upstream_body
        body = {name: value for name, value in body.items() if name not in CONVERSATION}
    except BaseException:
        gateway.settle(request, call, None, "upstream_error")
        raise
    created = int(time.time())
    if response.status != 200:
        return await _upstream_error(request, call, response)
    keep = (lambda final: door.keep(request, key, memo, final)) if door.keep and memo is not None else None
    if stream:
        translator = door.new_stream(body, model_name, created)
        relay = relay_stream(request, response, call, Translated(call.meter(request), translator), SSE_HEADERS)
        if keep is not None:
            relay = _then_keep(relay, translator, keep)
        return await gateway.survive_disconnect(request, relay)
    return await _whole(request, call, response, door, body, model_name, created, keep)


async def _then_keep(relay: Awaitable[web.StreamResponse], translator, keep: Callable[[dict], None]) -> web.StreamResponse:
    """The stream relayed to its end, then its final response kept: after the last byte went out,
    never on the way (the store's writes go to the ledger's writer task)."""
    client = await relay
    if translator.final is not None:
        keep(translator.final)
    return client


async def _whole(request: web.Request, call: gateway.Call, response, door: Door, body: dict, model_name: str,
                 created: int, keep: Callable[[dict], None] | None) -> web.Response:
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
        if keep is not None:
            keep(translated)
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
