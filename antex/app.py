"""make_app(config) -> web.Application: app keys, resources, middlewares and routes.

make_app does no I/O and reads no environment: the CLI and the tests both call it with
everything it needs, and every resource is acquired in a cleanup_ctx when the app starts.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
import time
from typing import AsyncIterator, Callable, Mapping

from aiohttp import web

from antex import connections, request_body, store
from antex.admission import UNIFIED_STATUS, Admission, codex_headers, ratelimit_headers, window_states
from antex.activity import ActivityCache
from antex.appkeys import (ACTIVITY, ADMISSION, BODY_BUDGET, BODY_HELD, CLOCK, CLUSTER, CONFIG, ENVIRON, INSTANCE, KEY,
                           HANDLERS, KEYS, LEDGER, MAX_TOKENS_SENT, OVER_CAP, PARSERS, POOL, READER, RELAYS,
                           REQUEST_ID, RESPONSES, STARTED, STOP_TIMER, STOPPING, UPSTREAM_KEYS, UPSTREAM_S, WINDOWS)
from antex.auth import KEY_POLL_S, KeyCache
from antex.config import Config, ServerConfig
from antex.errors import AntexError, render
from antex.failure import Failure
from antex.journal import DatabaseInUse, Journal
from antex.ledger import Ledger
from antex.parse_pool import ParsePool
from antex.responses_store import ResponseStore
from antex.store_reads import Reads, StoreUnavailable
from antex.routes import chat_completions, dashboard, fallback, messages, models, responses, service, usage
from antex.upstream import client as http_client, proxy
from antex.upstream.pool import Pool, Upstream

log = logging.getLogger("antex")

OPENAI_PATHS = ("/v1/chat/completions", "/v1/responses")
EVENTS_PRUNE_FIRST_S = 60.0  # raw events past [events] retention are rolled up a minute after start...
EVENTS_PRUNE_EVERY_S = 86400.0  # ...and then once a day
FEED_START_WAIT_S = 10.0
RESPONSES_PATH = "/v1/responses"
PRUNE_EVERY_S = 60.0  # expired stored responses are dropped this often


def make_app(config: Config, *, upstream_key: str | Mapping[str, str], clock: Callable[[], float] = time.time,
             environ: Mapping[str, str] | None = None) -> web.Application:
    """`upstream_key`: each upstream's key by name (one string: the key of every upstream);
    `environ`: where HTTPS_PROXY / NO_PROXY are read (the CLI passes os.environ; default none)."""
    app = web.Application(middlewares=[error_middleware], client_max_size=config.server.max_body_bytes + 1,
                          handler_args=handler_args(config.server))
    app[CONFIG] = config
    names = [entry.name for entry in config.upstreams]
    app[UPSTREAM_KEYS] = dict.fromkeys(names, upstream_key) if isinstance(upstream_key, str) else \
        {name: upstream_key[name] for name in names}
    app[BODY_BUDGET] = request_body.BodyBudget(config.server.max_buffered_body_bytes,
                                               config.server.max_buffered_body_bytes_per_key)
    app[CLOCK] = clock
    app[OVER_CAP] = set()  # filled by `antex serve`'s connection counter
    app[ENVIRON] = dict(environ or {})
    app.cleanup_ctx.append(database)
    app.cleanup_ctx.append(stored_responses)
    app.cleanup_ctx.append(key_watcher)
    if store.is_postgres(config.server.database):
        app.cleanup_ctx.append(instances)
    app.cleanup_ctx.append(daily_prune)
    app.cleanup_ctx.append(upstream_pool)
    app.cleanup_ctx.append(parse_workers)
    app.cleanup_ctx.append(stream_relays)  # last in, first out: streams settle before the rest closes
    app.on_response_prepare.append(add_gateway_headers)
    app.on_shutdown.append(stopping)
    # fallback last: it takes what no other route matched (404, 405), Expect handled like the rest
    for module in (messages, chat_completions, responses, models, usage, service, dashboard, fallback):
        module.setup(app)
    return app


def instance_id(server: ServerConfig) -> str:
    """This process's name among the instances sharing a PostgreSQL store: the configured one, or
    the host name and port (the same across restarts, so a restart finds its own journal)."""
    if server.instance_id:
        return server.instance_id
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:48] or "antex"
    return f"{host}-{server.port}"


def journal_base(server: ServerConfig, instance: str) -> str:
    """Where the journal and its lock live: beside an SQLite file; per instance with PostgreSQL."""
    if not store.is_postgres(server.database):
        return server.database
    return os.path.join(server.journal_dir or ".", f"antex-{instance}")


def handler_args(server: ServerConfig) -> dict:
    """How aiohttp reads a connection: bounded heads, and bodies left compressed.

    Bodies are read by the handlers after admission, with their own limits and decoding
    (antex/request_body.py): aiohttp would otherwise decompress a body nobody is allowed to send.
    aiohttp closes a connection whose handler waits for a request head longer than its keep-alive
    timeout, from the connection's opening or its previous answer: that is the head deadline.
    aiohttp's lingering (reading a refused body's rest as fast as it comes, for 10 s) is off: the
    error middleware discards it at a bounded pace instead (see answer_unread)."""
    return {"max_field_size": server.max_header_bytes, "max_headers": server.max_headers,
            "max_line_size": 16 * 1024, "keepalive_timeout": server.head_timeout_s, "auto_decompress": False,
            "lingering_time": 0}


async def database(app: web.Application) -> AsyncIterator[None]:
    """The reader and the single writer connection; on stop the ledger flushes (for a bounded
    time: what the store does not take stays in the journal)."""
    server = app[CONFIG].server
    shared = store.is_postgres(server.database)
    instance = app[INSTANCE] = instance_id(server) if shared else ""
    async with contextlib.AsyncExitStack() as stack:
        # The journal first: DatabaseInUse when another server has this database (or instance id).
        try:
            journal = Journal(journal_base(server, instance))
        except DatabaseInUse:
            if not shared:
                raise
            raise DatabaseInUse(f"Another Antex server on this machine is already instance {instance!r} (its journal "
                                f"is in {server.journal_dir or 'the working directory'}). Give each instance its own "
                                f"[server] instance_id, or its own port.") from None
        stack.callback(journal.close)  # (a second close, after the ledger's, does nothing)
        reader = app[READER] = await store.open_store(server.database)
        stack.push_async_callback(reader.close)
        writer = await store.open_writer(server.database, instance)
        stack.push_async_callback(writer.close)
        store_name = "PostgreSQL" if shared else "SQLite"
        ledger = app[LEDGER] = Ledger(reader, writer, journal, app[CLOCK], instance=instance, store_name=store_name,
                                      reads=Reads(store.errors(server.database), store_name))
        app[ADMISSION] = Admission(app[CONFIG], ledger)
        app[ACTIVITY] = ActivityCache(app[READER], ledger, app[CLOCK])
        models = app[CONFIG].models
        await ledger.recover(lambda model_id: models[model_id].rates if model_id in models else None)
        ledger.start()
        yield
        await ledger.close()


async def stored_responses(app: web.Application) -> AsyncIterator[None]:
    """The Responses API's stored responses (on the database's connections), pruned as they expire."""
    dialect = None
    if store.is_postgres(app[CONFIG].server.database):
        from antex.store import postgres_responses as dialect
    responses = app[RESPONSES] = ResponseStore(app[READER], app[LEDGER], app[CONFIG].responses, app[CLOCK], dialect)

    async def prune() -> None:
        while True:
            responses.prune()
            await asyncio.sleep(PRUNE_EVERY_S)

    task = asyncio.create_task(prune(), name="antex-responses-prune")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def stopping(app: web.Application) -> None:
    """A graceful stop began: requests cut from now on are settled as interrupted, and whatever
    still runs shutdown_grace_s from now is cut then (see cut)."""
    app[STOPPING].set()
    loop = asyncio.get_running_loop()
    app[STOP_TIMER].append(loop.call_at(loop.time() + app[CONFIG].server.shutdown_grace_s, cut, app))


def cut(app: web.Application) -> None:
    """The grace is over: cancel every stream relay and every handler still running. aiohttp's
    runner waits the grace for its handlers, then asks them to stop and waits the grace once more;
    a stream does not notice that ask, so without this a stop took twice the grace."""
    for task in (*app[RELAYS], *app[HANDLERS]):
        task.cancel()


async def stream_relays(app: web.Application) -> AsyncIterator[None]:
    """Streams whose client left still run; at a stop they get the rest of the grace period, then
    are cut (see stopping).

    Each relay settles its own request, so this runs before the upstream client and the
    ledger close: every stream is charged before the final flush.
    """
    relays = app[RELAYS] = set()
    app[HANDLERS] = set()
    app[STOPPING] = asyncio.Event()
    app[STOP_TIMER] = []
    yield
    timer = app[STOP_TIMER][0] if app[STOP_TIMER] else None
    if relays:
        loop = asyncio.get_running_loop()
        deadline = timer.when() if timer is not None else loop.time() + app[CONFIG].server.shutdown_grace_s
        _, pending = await asyncio.wait(set(relays), timeout=max(deadline - loop.time(), 0.0))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
    if timer is not None:
        timer.cancel()


async def key_watcher(app: web.Application) -> AsyncIterator[None]:
    """Load every key, then poll for CLI changes so revocations land within a second (at once
    when the cross-instance feed says so). On a connection of its own: a slow report on the shared
    reader never holds a revocation back."""
    conn = await store.open_store(app[CONFIG].server.database, pool_size=1)
    keys = app[KEYS] = KeyCache(app[CONFIG], conn)
    try:
        await keys.refresh()
    except BaseException:
        await conn.close()
        raise

    async def poll() -> None:
        failure = Failure("reloading keys", log)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(keys.changed.wait(), KEY_POLL_S)
            keys.changed.clear()
            try:
                await keys.refresh()
            except Exception as error:  # a locked or busy database: try again next tick, say so once
                failure.failed(error, "retrying")
            else:
                failure.recovered()

    task = asyncio.create_task(poll(), name="antex-key-watcher")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await conn.close()


async def instances(app: web.Application) -> AsyncIterator[None]:
    """With PostgreSQL: the feed to and from the other instances sharing the database; serving
    starts once it is connected (or after FEED_START_WAIT_S, degraded, when it cannot be)."""
    from antex.cluster import Cluster

    cluster = app[CLUSTER] = Cluster(app[CONFIG].server.database, app[INSTANCE], app[LEDGER], app[KEYS], app[READER],
                                     app[CLOCK])
    cluster.start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(cluster.feed.connected.wait(), FEED_START_WAIT_S)
    yield
    await cluster.close()


async def daily_prune(app: web.Application) -> AsyncIterator[None]:
    """A minute after start, then once a day: roll raw events past [events] retention up into
    daily totals, and forget client IPs no limit needs."""
    ledger, keep_s = app[LEDGER], app[CONFIG].events.retention_s

    async def run() -> None:
        delay = EVENTS_PRUNE_FIRST_S
        while True:
            await asyncio.sleep(delay)
            delay = EVENTS_PRUNE_EVERY_S
            try:
                events, ips = await ledger.prune(keep_s)
            except Exception as error:  # SQLite failing: the ledger says so too; try tomorrow
                log.error("pruning failed (%s: %s); trying again in a day", type(error).__name__, error)
            else:
                if events or ips:
                    log.info("pruned: %d events older than %.0f days rolled up into daily totals, %d client IPs "
                             "unseen for 24 h forgotten", events, keep_s / 86400, ips)

    task = asyncio.create_task(run(), name="antex-daily-prune")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def parse_workers(app: web.Application) -> AsyncIterator[None]:
    """The worker processes for large bodies: started by the first one, stopped with the app."""
    app[PARSERS] = parsers = ParsePool(app[CONFIG].server.body_timeout_s)
    yield
    await parsers.close()


async def upstream_pool(app: web.Application) -> AsyncIterator[None]:
    """The upstreams, each with its own keep-alive connections, reused across every request."""
    settings = app[CONFIG].upstream
    upstreams = []
    for entry in app[CONFIG].upstreams:
        client = http_client.Client(entry.base_url, connect_timeout_s=settings.connect_timeout_s,
                                    idle_timeout_s=settings.idle_timeout_s, max_connections=settings.max_connections,
                                    keepalive_s=settings.keepalive_s,
                                    proxy=proxy.for_upstream(entry.proxy, entry.base_url, app[ENVIRON]))
        upstreams.append(Upstream(entry, app[UPSTREAM_KEYS][entry.name], client))
    app[POOL] = Pool(upstreams)
    yield
    for upstream in upstreams:
        await upstream.client.close()


def new_request_id() -> str:
    return "req_antex_" + secrets.token_hex(12)


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Render every refusal in the route's error shape; never a traceback to the client."""
    request[STARTED] = time.perf_counter()
    request[UPSTREAM_S] = 0.0
    handlers, task = request.app[HANDLERS], asyncio.current_task()
    handlers.add(task)  # cut if it still runs when a stop's grace ends
    try:
        if request.transport in request.app[OVER_CAP]:
            raise connections.past_cap_error()
        return await handler(request)
    except AntexError as error:
        response = error_response(request, error)
        if request.transport in request.app[OVER_CAP]:
            response.force_close()  # its body is still read (answer_unread): a close then is no reset
        return await answer_unread(request, response)
    except web.HTTPException as exc:
        if exc.status == 405:
            error = AntexError("method_not_allowed", f"{request.method} is not allowed on {request.path}.")
        elif exc.status == 404:
            error = AntexError("not_found_error", f"No route {request.method} {request.path}. See the API reference in the README.")
        elif exc.status == 413:
            error = AntexError("payload_too_large", "The request body is too large.")
        else:
            raise
        return await answer_unread(request, error_response(request, error))
    except StoreUnavailable as error:  # logged once per change of state where it was found
        return await answer_unread(request, error_response(request, error.answer()))
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as error:
        reads = request.app[LEDGER].reads if LEDGER in request.app else None
        if reads is not None and isinstance(error, reads.errors):  # a read no guard was around
            return await answer_unread(request, error_response(request, reads.failed(error).answer()))
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(request, AntexError("api_error", "Antex hit an internal error. It has been logged; try again."))
    finally:
        handlers.discard(task)
        held = request.get(BODY_HELD)  # a body refused or cut before it was sent upstream
        if held is not None:
            held.release()


async def answer_unread(request: web.Request, response: web.Response) -> web.StreamResponse:
    """A refusal sent before its body was read: answered at once, then the body's rest discarded at
    the gateway's pace (request_body.discard), so the client, still uploading, gets to read it. A
    body declared past max_body_bytes, or one whose client waits for a 100 it never got, is not
    waited for: its connection closes once answered."""
    content = request.content
    if content.is_eof():  # the usual case: the whole body was read, or there was none
        return response
    if (request.content_length or 0) > request.app[CONFIG].server.max_body_bytes:
        response.force_close()
        return response
    if request_body.expects_continue(request) and request.get(BODY_HELD) is None:
        response.force_close()  # refused before its 100: the client sends no body, so none is waited for
        return response
    await response.prepare(request)
    await response.write_eof()
    held = request.get(BODY_HELD)  # what was read of it is gone: a slow discard must not keep its budget
    if held is not None:
        held.release()
    await request_body.discard(request, request.app[BODY_BUDGET], request.app[CONFIG].server)
    return response


def error_response(request: web.Request, error: AntexError) -> web.Response:
    request_id = request.get(REQUEST_ID) or new_request_id()
    body = render(error, openai_shape=request.path.startswith(OPENAI_PATHS), request_id=request_id)
    response = web.Response(status=error.status, body=body, content_type="application/json")
    response.headers["request-id"] = request_id
    response.headers.update(error.headers)
    return response


async def add_gateway_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every keyed response: the key's window state; on every API response: Antex's own cost,
    and never a header that carries the operator's upstream key."""
    path = request.path
    if not path.startswith("/v1/"):
        return
    headers = response.headers
    values = "\n".join(headers.values())
    for upstream_key in request.app[UPSTREAM_KEYS].values():
        if upstream_key and upstream_key in values:  # one scan in C; rarely true
            for name, value in list(headers.items()):
                if upstream_key in value:  # an upstream header echoing an operator's key
                    del headers[name]
    key = request.get(KEY)
    if key is not None and UNIFIED_STATUS not in headers:  # a 429 carries its own
        windows = request.get(WINDOWS) or _windows_now(request.app, key)
        if windows:
            now = request.app[CLOCK]()
            headers.extend(ratelimit_headers(windows, now))
            if path == RESPONSES_PATH:  # Codex draws its own usage bars from these
                headers.extend(codex_headers(windows, now))
    lowered = request.get(MAX_TOKENS_SENT)
    if lowered is not None:
        headers["x-antex-max-tokens"] = str(lowered)
    started = request.get(STARTED)
    if started is not None:
        overhead_ms = (time.perf_counter() - started - request.get(UPSTREAM_S, 0.0)) * 1000
        headers["x-antex-overhead-ms"] = f"{max(overhead_ms, 0.0):.3f}"


def _windows_now(app: web.Application, key) -> tuple | None:
    """The key's windows for a response that never reached admission (a refusal before it)."""
    if key.limits is None:
        return None
    state = app[LEDGER].states.get(key.id)
    if state is None:
        return None
    return window_states(state, key.limits.credits_5h, key.limits.credits_7d, app[CLOCK]())
