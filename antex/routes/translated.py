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

from antex import gateway
from antex.auth import KeyRecord
from antex.errors import AntexError, openai_body, translate_upstream_error
from antex.prepare import Prepared, Recalled
from antex.relay import Translated, relay_stream
from antex.sse import UsageMeter

MESSAGES = "/v1/messages"
SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}


@dataclass(frozen=True)
class Door:
    """What makes one OpenAI front door different from another."""

    endpoint: str
    # raw body, Terms[, Recalled] -> Prepared: the door's job (antex/prepare.py)
    job: Callable[..., Prepared]
    # (Anthropic message, client body, model name, created) -> the client's response body
    to_response: Callable[[dict, dict, str, int], dict]
    # (client body, model name, created) -> a stream translator (event/close/fail; `final` once closed)
    new_stream: Callable[[dict, str, int], Any]
    # Stored state (the Responses API's): (request, key, Prepared.recall) -> (Recalled for the job's
    # second run, the ids of the conversation it continues)...
    recall: Callable[[web.Request, KeyRecord, tuple], Awaitable[tuple[Recalled, list[str]]]] | None = None
    # ...and (request, key, Prepared.items, continued ids, the final response body) -> None, keeping it.
    keep: Callable[[web.Request, KeyRecord, list, list[str], dict], None] | None = None


async def handle(request: web.Request, door: Door) -> web.StreamResponse:
    key = gateway.authenticate(request)
    call = await gateway.admit(request, key, door.endpoint)  # before a byte of the body is read
    continues: list[str] = []
    try:
        raw = await gateway.read_body(request, key)
        terms = gateway.terms(request, key)
        prepared = await gateway.run_job(request, door.job, raw, terms)
        if prepared.recall is not None:  # the body refers to stored state: read it, then run again with it
            recalled, continues = await door.recall(request, key, prepared.recall)
            prepared = await gateway.run_job(request, door.job, raw, terms, recalled)
            del recalled
        del raw
        model = gateway.accept(request, call, prepared)
        gateway.confirm(request, call, len(prepared.upstream))
    except BaseException:
        call.ticket.release()  # refused before the journal: nothing to charge
        raise
    upstream_body, stream, model_name, body, items = (prepared.upstream, prepared.stream, prepared.model_name, prepared.echo,
                                                     prepared.items)
    try:
        response = await gateway.open_upstream(request, MESSAGES, upstream_body, model, conversation=prepared.conversation,
                                               stream=stream)
        del upstream_body, prepared
    except BaseException:
        gateway.settle(request, call, None, "upstream_error")
        raise
    created = int(time.time())
    if response.status != 200:
        return await _upstream_error(request, call, response)
    keep = (lambda final: door.keep(request, key, items, continues, final)) if door.keep and items is not None else None
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
