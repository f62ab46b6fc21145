"""Send a request to the pool: the chosen upstream first, the next one when it fails before the
answer's first byte reached the client, within `max_attempts` and `failover_deadline_s`.

What moves a request on: no connection (refused, reset, DNS or TLS failure, a stall before the
head), a 5xx, 529 or 429, a 401/403 (that upstream's key), or a stream whose first event is an
`error` event. A 403 is judged by the next answer: when another upstream refuses the same request
with 403 too, the request is the problem (not their keys), that 403 goes back to the client and
neither upstream is taken out; otherwise the first one's key is. Whatever the attempts, the caller gets one answer and charges once. When every
upstream that serves the model is cooling down (before the first attempt or after the last),
the client gets `overloaded_error` with the soonest recovery as `retry-after`; otherwise, with
nothing left to try, the last answer goes back as it came (its own status and error body), or,
with no answer at all, a clear Anthropic-shaped error. With one upstream for a model, its answer
always goes back as it came: there is nowhere else to go.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable, Mapping

from antex.catalog import Model
from antex.errors import AntexError
from antex.upstream import client as http_client
from antex.upstream.config import UpstreamConfig
from antex.upstream.headers import request_headers
from antex.upstream.pool import Pool, Upstream

log = logging.getLogger("antex.upstream")

RETRYABLE = frozenset({401, 403, 429})  # and every status >= 500
ERROR_EVENT = (b"event: error", b"event:error")
DRAIN_TIMEOUT_S = 2.0  # an error answer not read by then is dropped with its connection


async def send(pool: Pool, settings: UpstreamConfig, client_headers: Mapping[str, str], path: str, body: bytes,
               model: Model, conversation: bytes | None, *, watch_first_event: bool, clock: Callable[[], float]
               ) -> tuple[Upstream, http_client.Response]:
    """(the upstream that answered, its answer, head received); see the module docstring."""
    family = model.tier
    now = clock()
    candidates = pool.choose(model.id, family, conversation, now)
    if not candidates:
        raise overloaded(pool.retry_after_s(model.id, family, now))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.failover_deadline_s
    several = len(candidates) > 1
    pooled = several or len(pool.serving(model.id)) > 1  # else its one upstream gets every request, as it is
    attempts = min(len(candidates), settings.max_attempts)
    last: tuple[Upstream, http_client.Response] | None = None  # the latest error answer, kept open
    failure: AntexError | None = None
    refused: Upstream | None = None  # it answered 403: its key, or this request? The next answer tells.
    try:
        for attempt, upstream in enumerate(candidates[:attempts]):
            if attempt and loop.time() > deadline:
                break
            if pooled and not pool.begin(upstream, clock()):  # another request is probing it
                continue
            try:
                response = await upstream.client.post(path, request_headers(client_headers, upstream.key), body)
            except (TimeoutError, http_client.UpstreamError) as exc:
                pool.failed(upstream, family, _describe(exc), clock())
                failure = _as_error(exc)
                continue
            try:  # from here on, this answer is closed whatever happens, unless it is handed on
                status = response.status
                if watch_first_event and several and status == 200:
                    try:
                        if await _opens_with_error(response):
                            status = 529 if b"overloaded_error" in await response.peek() else 500
                    except (TimeoutError, http_client.UpstreamError) as exc:
                        response.close()
                        pool.failed(upstream, family, _describe(exc), clock())
                        failure = _as_error(exc)
                        continue
                if status == 403 and refused is not None:
                    # Two upstreams refused this request: the request is the problem, not their keys.
                    pool.inconclusive(refused)
                    pool.inconclusive(upstream)
                    refused = None
                    return upstream, response
                if refused is not None:  # another upstream took the request: that 403 was its key
                    pool.answered(refused, family, 403, {}, clock())
                    refused = None
                if status == 403 and pooled and attempt + 1 < attempts:
                    refused = upstream  # judged by the next answer
                else:
                    pool.answered(upstream, family, status, response.headers, clock())
                if last is not None:
                    last[1].close()
                    last = None
                if status in RETRYABLE or status >= 500:
                    log.debug("upstream %s answered %d", upstream.name, status)  # the pool logs changes of state
                    if attempt + 1 < attempts and response.status >= 400:
                        if response.complete:  # the usual small error answer, all here: its connection is free
                            response.close()
                        else:
                            await _drain(response)  # its connection serves the next request: no new handshake
                    else:
                        last = upstream, response  # the client's answer if nothing better comes
                    continue
                if conversation is not None and pooled:
                    pool.bind(conversation, upstream, clock())
                return upstream, response
            except BaseException:
                response.close()
                raise
        if refused is not None:  # nobody else answered: nothing says the request was the problem
            pool.answered(refused, family, 403, {}, clock())
        now = clock()
        serving = pool.serving(model.id)
        if len(serving) > 1 and not any(upstream.available(family, now) for upstream in serving):
            raise overloaded(pool.retry_after_s(model.id, family, now))
        if last is not None:
            answer, last = last, None
            return answer  # the upstream's own error, as it came
        raise failure or overloaded(1)
    finally:
        if last is not None:
            last[1].close()


async def _drain(response: http_client.Response) -> None:
    """Read an error answer still arriving to its end and give its connection back (or close it)."""
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            await response.read()
    except (TimeoutError, http_client.UpstreamError):
        pass
    finally:
        response.close()


async def _opens_with_error(response: http_client.Response) -> bool:
    """Whether a stream's first event is `event: error` (nothing has reached the client yet)."""
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        return False
    return (await response.peek()).lstrip().startswith(ERROR_EVENT)


def overloaded(retry_after_s: int) -> AntexError:
    return AntexError("overloaded_error", f"Every upstream that serves this model is busy or cooling down. "
                      f"Try again in {retry_after_s} seconds.", headers={"retry-after": str(retry_after_s)})


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _as_error(exc: BaseException) -> AntexError:
    """An upstream that could not be used, as a clear Anthropic-shaped 5xx (the pool logs the
    state change once; not here, per request)."""
    if isinstance(exc, TimeoutError):
        return AntexError("timeout_error", "The upstream API did not answer in time. Try again shortly.")
    if isinstance(exc, http_client.TLSFailed):
        return AntexError("bad_gateway", "Could not establish a secure connection to the upstream API. The operator should check the upstream URL.")
    if isinstance(exc, http_client.ConnectFailed):
        return AntexError("bad_gateway", "Could not reach the upstream API. Try again shortly; if it persists, tell the operator.")
    return AntexError("bad_gateway", "The request to the upstream API failed. Try again shortly.")
