"""The flow every metered front door shares: authenticate, admit, read, confirm, call upstream, settle.

HTTP in -> admission -> upstream -> metering -> ledger. The route modules only differ in how
they translate the request and the answer; each step here is the same for all of them.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import orjson
from aiohttp import web

from antex import prepare, request_body
from antex.admission import Ticket
from antex.appkeys import (ADMISSION, BODY_BUDGET, BODY_HELD, CLOCK, CONFIG, KEY, KEYS, LEDGER, MAX_TOKENS_SENT, PARSERS,
                           POOL, RELAYS, REQUEST_ID, STOPPING, UPSTREAM, UPSTREAM_S, WINDOWS)
from antex.auth import KeyRecord, request_ip
from antex.catalog import Model
from antex.credits import Usage, micro_credits
from antex.errors import AntexError
from antex.ledger import Charge, KeyState, LedgerUnavailable
from antex.sse import UsageMeter
from antex.upstream import client as http_client
from antex.upstream import failover
from antex.upstream.headers import request_query
from antex.upstream.pool import named_conversation

log = logging.getLogger("antex.gateway")

CHARS_PER_TOKEN = 4  # for the estimates charged when no usage could be read


def authenticate(request: web.Request) -> KeyRecord:
    """The caller's key record; remembered on the request for the rate-limit headers."""
    key = request.app[KEYS].authenticate(request.headers)
    request[KEY] = key
    return key


async def read_body(request: web.Request, key: KeyRecord) -> bytes:
    """The whole body, decoded, counted against the key's and the gateway's body budgets until
    it has been sent upstream (or the request ends)."""
    held = request[BODY_HELD] = request_body.Held(request.app[BODY_BUDGET], key.id)
    return await request_body.read(request, held, request.app[CONFIG].server)


def release_body(request: web.Request) -> None:
    """The body is no longer needed: give its bytes back to the budgets."""
    held = request.get(BODY_HELD)
    if held is not None:
        held.release()


def terms(request: web.Request, key: KeyRecord) -> prepare.Terms:
    """What the door's job (antex/prepare.py) needs besides the body."""
    app = request.app
    return prepare.Terms(app[CONFIG].names, key.limits, key.row.plan, name_conversation=len(app[POOL].upstreams) > 1
                         and not request.headers.get("x-claude-code-session-id"))


async def run_job(request: web.Request, job: Callable[..., prepare.Prepared], raw: bytes, *args) -> prepare.Prepared:
    """job(raw, *args): inline for a small body, in a parse worker for a large one (the event loop
    must not spend seconds on one client's 30 MB of tiny parts); both raise the same errors."""
    threshold = request.app[CONFIG].server.parse_in_worker_bytes
    if not threshold or len(raw) < threshold:
        return job(raw, *args)
    return await request.app[PARSERS].run(job, raw, *args)


def accept(request: web.Request, call: Call | None, prepared: prepare.Prepared) -> Model:
    """The model a job chose, on the call (if any); a lowered max_tokens is said in x-antex-max-tokens."""
    model = request.app[CONFIG].models[prepared.model_id]
    if call is not None:
        call.model = model
    if prepared.max_tokens_sent is not None:
        request[MAX_TOKENS_SENT] = prepared.max_tokens_sent
    return model


@dataclass
class Call:
    """One admitted request, from admission until it is settled."""

    key: KeyRecord
    state: KeyState
    endpoint: str
    ticket: Ticket
    model: Model | None = None  # known once the body is read
    estimated_input: int = 0  # input tokens guessed from the body's size
    journal_id: str | None = None
    settled: bool = False

    def meter(self, request: web.Request) -> UsageMeter:
        """A usage meter whose first usage (message_start) is journaled for crash recovery."""
        ledger, journal_id = request.app[LEDGER], self.journal_id
        return UsageMeter(on_start=lambda usage: ledger.usage_seen(journal_id, usage))


async def check_ip(request: web.Request, key: KeyRecord) -> KeyState:
    """The client's address against the key's max_ips (a new one is recorded); returns the key's state.
    Every keyed door that reaches the upstream passes it, metered or not: a leaked key's new
    addresses count wherever they use it."""
    app = request.app
    ledger = app[LEDGER]
    state = ledger.states.get(key.id) or await ledger.state(key.id)  # loaded once, then no await
    app[ADMISSION].check_ip(key, state, request_ip(request, app[CONFIG].server), app[CLOCK]())
    return state


async def admit(request: web.Request, key: KeyRecord, endpoint: str) -> Call:
    """The checks that need no body, in order: key status and plan, client IP, the two windows,
    concurrency. The returned Call holds a concurrency slot: release its ticket if the request is
    refused before confirm()."""
    app = request.app
    admission = app[ADMISSION]
    admission.check_key(key)
    state = await check_ip(request, key)
    now = app[CLOCK]()
    windows = admission.check_windows(key, state, now)
    request[WINDOWS] = windows
    ticket = admission.check_concurrency(key, state)
    return Call(key, state, endpoint, ticket)


def confirm(request: web.Request, call: Call, body_bytes: int) -> None:
    """The journal entry that makes a crash from here on charge the request, once every check
    passed (serve_max_tokens is the last): written only now, so a request refused for its body
    is never charged."""
    call.estimated_input = body_bytes // CHARS_PER_TOKEN
    try:
        call.journal_id = request.app[LEDGER].journal(call.key.id, call.model.id, call.endpoint, call.estimated_input)
    except LedgerUnavailable:  # logged by the ledger, once per change of state
        raise AntexError("ledger_unavailable", "Antex cannot record requests right now (its disk or database is failing), "
                         "so it cannot serve them. Try again later; the operator can see why on /healthz.",
                         headers={"retry-after": "30"}) from None


async def open_upstream(request: web.Request, path: str, body: bytes, model: Model, *, conversation: bytes | None = None,
                        stream: bool = False) -> http_client.Response:
    """POST `body` to the upstream `path` (with the query parameters the upstream knows) on the
    pool's choice for this conversation, failing over before the first byte
    (antex/upstream/failover.py); `conversation`: the body's part of its name (pool.body_seed).
    The body's bytes go back to the budgets once sent."""
    app = request.app
    query = request_query(request.rel_url.query)
    if query:
        path += "?" + query
    pool = app[POOL]
    named = None
    if len(pool.serving(model.id)) > 1:  # one upstream: nothing to choose, nothing to hash
        named = named_conversation(request[KEY].id, request.headers, conversation)
    started = time.perf_counter()
    try:
        request[UPSTREAM], response = await failover.send(
            pool, app[CONFIG].upstream, request.headers, path, body, model, named, watch_first_event=stream,
            clock=app[CLOCK])
    finally:
        request[UPSTREAM_S] += time.perf_counter() - started
        release_body(request)
    request_id = response.headers.get("request-id")
    if request_id:
        request[REQUEST_ID] = request_id
    return response


async def read_upstream(request: web.Request, response: http_client.Response) -> bytes:
    """A whole non-streaming upstream body; a stall or a cut becomes a clear 5xx."""
    started = time.perf_counter()
    try:
        payload = await response.read()
    except TimeoutError:
        raise AntexError("timeout_error", "The upstream API stopped answering mid-response. Try again.") from None
    except http_client.UpstreamError:
        raise AntexError("bad_gateway", "The upstream API broke off its answer. Try again.") from None
    finally:
        request[UPSTREAM_S] += time.perf_counter() - started
    upstream_key = request[UPSTREAM].key
    if response.status >= 400 and upstream_key:  # an error body may echo the credentials it was sent
        payload = payload.replace(upstream_key.encode(), b"[redacted]")
    return payload


async def survive_disconnect(request: web.Request, relay: Awaitable[web.StreamResponse]) -> web.StreamResponse:
    """Run a stream relay so that a client hanging up does not stop it.

    aiohttp may cancel a handler whose client left; the relay runs in its own task, so in
    "finish" mode it keeps reading the upstream to its final usage; in "cancel" mode it is
    cancelled with the handler. Either way the relay settles the request itself.
    """
    task = asyncio.ensure_future(relay)
    relays = request.app[RELAYS]
    relays.add(task)
    task.add_done_callback(relays.discard)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if request.app[CONFIG].upstream.on_client_disconnect == "cancel":
            task.cancel()
        raise


def settle(request: web.Request, call: Call, meter: UsageMeter | None, outcome: str) -> None:
    """Charge the request once: credits from the usage seen, one event for the ledger."""
    if call.settled:
        return
    call.settled = True
    call.ticket.release()
    app = request.app
    if outcome in ("upstream_error", "client_disconnected") and app[STOPPING].is_set():
        outcome = "interrupted"  # cut by a stop, not by the upstream or the client
    usage = Usage.from_anthropic(meter.usage) if meter else Usage()
    estimated = False
    if outcome == "complete" and not (meter and meter.usage):
        # An answer whose usage could not be read is charged an estimate, never 0 as complete.
        usage, estimated = Usage(input_tokens=call.estimated_input), True
    if outcome == "client_disconnected" and meter and not meter.finished:
        # Cancelled before the final usage: charge at least what was streamed.
        estimate = -(-meter.streamed_chars // CHARS_PER_TOKEN)
        if estimate > usage.output_tokens:
            usage = usage._replace(output_tokens=estimate)
    charge = Charge(
        key_id=call.key.id,
        ts=app[CLOCK](),
        model=call.model.id,
        endpoint=call.endpoint,
        usage=usage,
        micro_credits=micro_credits(usage, call.model.rates),
        request_id=request.get(REQUEST_ID),
        outcome=outcome,
        upstream=upstream.name if (upstream := request.get(UPSTREAM)) is not None else None,
        estimated=estimated,
    )
    app[LEDGER].charge(call.state, charge, call.journal_id)


def dumps(value: object) -> str:
    """json_response's encoder: orjson, as everywhere JSON is touched."""
    return orjson.dumps(value).decode()
