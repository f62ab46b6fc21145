"""A fake Anthropic Messages API on loopback, for the tests and the benchmarks.

It speaks the real wire format (JSON bodies, SSE framing, error shape, headers), checks the
upstream key like Anthropic does, records every request it receives, and answers with scripted
replies (see tests/fake_replies.py) or a deterministic default.

    fake = FakeAnthropic()
    fake.queue(text_reply("Hi", input_tokens=10, output_tokens=3), error_reply(529, ...))
    server = await aiohttp_server(fake.app())

Standalone, for subprocess tests and `make bench`:

    python -m tests.fake_anthropic --host 127.0.0.1 --port 0 --events 40
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import random
import secrets
import signal
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from tests.fake_replies import (
    DEFAULT_OUTPUT_TOKENS,
    DEFAULT_TEXT,
    ERROR_EVENT,
    MALFORMED_BYTES,
    Reply,
    default_reply,
    error_body,
    error_reply,
    estimate_input_tokens,
    text_reply,
    thinking_reply,
    tool_use_reply,
)

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_OUTPUT_TOKENS",
    "DEFAULT_TEXT",
    "ORGANIZATION_ID",
    "FakeAnthropic",
    "RecordedRequest",
    "Reply",
    "default_reply",
    "error_reply",
    "estimate_input_tokens",
    "text_reply",
    "thinking_reply",
    "tool_use_reply",
]

DEFAULT_API_KEY = "sk-ant-upstream-test-key"
ORGANIZATION_ID = "0f7c6e2a-5b1d-4c3e-9a8f-fa4e0b5d1c2e"  # the gateway must never pass this on
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
STALL_LIMIT_S = 600.0  # a stalled stream ends after this even if the client stays
DISCONNECT_POLL_S = 0.02
# How an upstream misbehaves, for soak runs (FakeAnthropic(faults=...)): each fault once per kind.
FAULT_TEXT = "A reply that will not arrive whole, one word at a time."
FAULTS = {  # kind -> reply; the kinds are what FakeAnthropic.injected counts
    "529": error_reply(529, "overloaded_error", "Overloaded"),
    "500": error_reply(500, "api_error", "Internal server error"),
    "error event": text_reply(FAULT_TEXT, events=8, error_event_after=4),
    "cut": text_reply(FAULT_TEXT, events=8, cut_after=4),
    "stall": text_reply(FAULT_TEXT, events=8, stall_after=4),
    "malformed": text_reply(FAULT_TEXT, events=8, malformed=True),
    "slow": text_reply(FAULT_TEXT, events=8, delay_s=0.05),
}
FAULT_KINDS = tuple(FAULTS)
CLIENT_REQUEST_ID = "x-client-request-id"  # a client's own id for its request, which gateways pass on
REQUIRED_FIELDS = {
    "/v1/messages": ("model", "messages", "max_tokens"),
    "/v1/messages/count_tokens": ("model", "messages"),
}
STATUS_ERROR_TYPES = {404: "not_found_error", 405: "invalid_request_error"}
MAX_BODY_BYTES = 32 * 1024 * 1024  # Anthropic's own limit for /v1/messages

REQUEST_ID = web.RequestKey("request_id", str)  # the id in the header and in error bodies
REQUEST_JSON = web.RequestKey("json", object)  # the body, parsed once
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RecordedRequest:
    """What reached the fake: tests check the client key never arrives and the body is intact."""

    method: str
    path: str
    query_string: str
    headers: CIMultiDict[str]
    body: bytes
    json: Any  # the parsed body; None when empty or not JSON


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")


def _error(status: int, error_type: str, message: str, request_id: str) -> web.Response:
    return web.Response(
        status=status,
        body=error_body(error_type, message, request_id),
        content_type="application/json",
    )


def _presented_keys(request: web.Request) -> list[str]:
    """x-api-key and any Bearer token: anthropic>=2 sends its api_key as `Authorization: Bearer`.

    Every credential must be the upstream key, so a client key that leaks through in either
    header fails the request instead of slipping past next to a correct one.
    """
    keys = request.headers.getall("x-api-key", [])
    for value in request.headers.getall("Authorization", []):
        scheme, _, token = value.partition(" ")
        keys.append(token if scheme.lower() == "bearer" else value)
    return keys


def _hang_up(request: web.Request) -> None:
    """Close the connection mid-response; what was already written is flushed first."""
    if request.transport is not None:
        request.transport.close()


def _parse(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


class FakeAnthropic:
    """The fake upstream. One instance per test; everything it knows lives on the instance."""

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        events: int = 1,
        record: bool = True,
        require_version: bool = True,
        coalesce: bool = False,
        faults: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.api_key = api_key
        self.default = default_reply(events)
        self.record = record  # off for benchmarks: no per-request copies kept
        self.require_version = require_version  # Anthropic refuses a request without it
        # One write per stream instead of one per event: cheaper for benchmarks, but a client
        # then sees the whole stream at once, unlike from Anthropic. Slow or faulty replies
        # are always written event by event.
        self.coalesce = coalesce
        self.faults = faults  # share of unscripted replies that misbehave (soak runs)
        self._random = random.Random(seed)
        self.served = 0  # /v1/messages requests answered in any way, recorded or not
        # Faults injected (faults=...): how many of each kind, and per client request id (the
        # x-client-request-id header) the kinds its attempts got, so a checker can name the cause
        # of every error a client saw.
        self.injected: Counter[str] = Counter()
        self.faulted: dict[str, list[str]] = {}
        self.requests: list[RecordedRequest] = []
        self.disconnects = 0  # responses the client walked away from before they ended
        self.url: str | None = None  # set by start()
        self._replies: deque[Reply] = deque()
        self._runner: web.AppRunner | None = None
        # Pool tests: every /v1/messages answered 529 while `overloaded`; a model whose ID holds a
        # key of `rate_limited` gets 429 with that many seconds as retry-after.
        self.overloaded = False
        self.rate_limited: dict[str, float] = {}

    def queue(self, *replies: Reply) -> None:
        """Script the next answers, consumed first in, first out, before falling back to default."""
        self._replies.extend(replies)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/", self._root)  # HEAD / too
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve outside pytest-aiohttp (subprocess and bench); returns the base URL."""
        self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for_requests(self, count: int, timeout_s: float = 5.0) -> list[RecordedRequest]:
        """The first `count` recorded requests, once they have all arrived."""
        await self._wait_until(lambda: len(self.requests) >= count, timeout_s, f"{count} requests")
        return self.requests[:count]

    async def wait_for_disconnects(self, count: int, timeout_s: float = 5.0) -> None:
        """Returns once `count` clients left mid-response: proof that cancellation reached us."""
        await self._wait_until(lambda: self.disconnects >= count, timeout_s, f"{count} disconnects")

    async def _wait_until(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"fake upstream: no {what} within {timeout_s} s")
            await asyncio.sleep(0.005)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every response carries Anthropic's headers; every error comes in Anthropic's shape."""
        request[REQUEST_ID] = request_id = _new_id("req_011")
        try:
            response = await self._guarded(request, handler)
        except web.HTTPException as exc:  # unknown route or method
            error_type = STATUS_ERROR_TYPES.get(exc.status, "api_error")
            response = _error(exc.status, error_type, exc.reason, request_id)
        if not response.prepared:  # a stream set its own before its first byte
            response.headers["request-id"] = request_id
            response.headers["anthropic-organization-id"] = ORGANIZATION_ID
        return response

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Record the request, then check its key and version the way Anthropic does."""
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            message = f"Request exceeds the maximum size of {MAX_BODY_BYTES} bytes."
            return _error(413, "request_too_large", message, request[REQUEST_ID])
        request[REQUEST_JSON] = parsed = _parse(body)
        if self.record:
            headers = CIMultiDict(request.headers)
            self.requests.append(
                RecordedRequest(
                    request.method, request.path, request.query_string, headers, body, parsed
                )
            )
        if not request.path.startswith("/v1/"):
            return await handler(request)
        keys = _presented_keys(request)
        if not keys or any(key != self.api_key for key in keys):
            return _error(401, "authentication_error", "invalid x-api-key", request[REQUEST_ID])
        if self.require_version and "anthropic-version" not in request.headers:
            message = "anthropic-version: header is required"
            return _error(400, "invalid_request_error", message, request[REQUEST_ID])
        return await handler(request)

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    def _invalid(self, request: web.Request) -> web.Response | None:
        """The 400 Anthropic would send for a body without its required fields, else None."""
        payload = request[REQUEST_JSON]
        if not isinstance(payload, dict):
            message = (
                "The request body is not valid JSON." if payload is None else "Expected an object."
            )
            return _error(400, "invalid_request_error", message, request[REQUEST_ID])
        for name in REQUIRED_FIELDS[request.path]:
            if name not in payload:
                return _error(
                    400, "invalid_request_error", f"{name}: Field required", request[REQUEST_ID]
                )
        return None

    async def _count_tokens(self, request: web.Request) -> web.Response:
        if (invalid := self._invalid(request)) is not None:
            return invalid
        body = orjson.dumps({"input_tokens": estimate_input_tokens(await request.read())})
        return web.Response(body=body, content_type="application/json")

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        if (invalid := self._invalid(request)) is not None:
            return invalid
        self.served += 1
        reply = self._pool_signal(str(request[REQUEST_JSON].get("model")))
        if reply is None:
            reply = self._replies.popleft() if self._replies else self._unscripted(request)
        if reply.error_type is not None:
            body = reply.error_body(request[REQUEST_ID])
            response = web.Response(status=reply.status, body=body, content_type="application/json")
            response.headers.update(reply.headers)
            return response
        payload = request[REQUEST_JSON]
        input_tokens = reply.input_tokens
        if input_tokens is None:
            input_tokens = estimate_input_tokens(await request.read())
        answer = self._stream if payload.get("stream") else self._message
        try:
            return await answer(
                request, reply, _new_id("msg_01"), str(payload["model"]), input_tokens
            )
        except asyncio.CancelledError:  # the client left and aiohttp cancelled us
            self.disconnects += 1
            raise

    def _pool_signal(self, model: str) -> Reply | None:
        """A 529 storm or a per-family 429, as set on the instance (None: answer as usual)."""
        if self.overloaded:
            return error_reply(529, "overloaded_error", "Overloaded")
        for family, retry_after_s in self.rate_limited.items():
            if family in model:
                return error_reply(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute "
                                   "rate limit", headers={"retry-after": f"{retry_after_s:g}"})
        return None

    def _unscripted(self, request: web.Request) -> Reply:
        """The default reply, or with probability `faults` one of the ways upstreams fail (counted)."""
        if self.faults and self._random.random() < self.faults:
            kind = self._random.choice(FAULT_KINDS)
            self.injected[kind] += 1
            client_id = request.headers.get(CLIENT_REQUEST_ID)
            if client_id is not None:
                self.faulted.setdefault(client_id, []).append(kind)
            return FAULTS[kind]
        return self.default

    async def _message(
        self, request: web.Request, reply: Reply, message_id: str, model: str, input_tokens: int
    ) -> web.StreamResponse:
        """A non-streaming answer; faults take their non-streaming form (see Reply)."""
        if reply.stall_after is not None:
            await self._stall(request)
            return web.Response(status=504)  # nobody is left to read it
        if reply.cut_after is not None:
            _hang_up(request)
            return web.Response(status=502)  # never sent: the connection is gone
        if reply.error_event_after is not None:
            return _error(529, "overloaded_error", "Overloaded", request[REQUEST_ID])
        if reply.malformed:
            return web.Response(body=MALFORMED_BYTES, content_type="application/json")
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s * reply.event_count)
        body = reply.message(message_id, model, input_tokens)
        response = web.Response(
            body=gzip.compress(body) if reply.gzip else body, content_type="application/json"
        )
        if reply.gzip:
            response.headers["Content-Encoding"] = "gzip"
        response.headers.update(reply.headers)
        return response

    async def _stream(
        self, request: web.Request, reply: Reply, message_id: str, model: str, input_tokens: int
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": SSE_CONTENT_TYPE, "Cache-Control": "no-cache"}
        )
        response.headers["request-id"] = request[REQUEST_ID]
        response.headers["anthropic-organization-id"] = ORGANIZATION_ID
        response.headers.update(reply.headers)
        await response.prepare(request)
        if reply.malformed:
            await response.write(MALFORMED_BYTES)
            return response
        frames = reply.stream(message_id, model, input_tokens)
        if self.coalesce and not reply.delay_s and reply.fault_after is None:
            frames = [b"".join(frames)]
        try:
            for frame in frames[: reply.fault_after]:
                if reply.delay_s:
                    await asyncio.sleep(reply.delay_s)
                await response.write(frame)
            if reply.error_event_after is not None:
                await response.write(ERROR_EVENT)
            elif reply.cut_after is not None:
                _hang_up(request)  # no message_stop
            elif reply.stall_after is not None:
                await self._stall(request)
        except ConnectionResetError:  # a write found the client gone
            self.disconnects += 1
        return response

    async def _stall(self, request: web.Request) -> None:
        """Send nothing until the client hangs up (or STALL_LIMIT_S passes)."""
        deadline = time.monotonic() + STALL_LIMIT_S
        while time.monotonic() < deadline:
            transport = request.transport
            if transport is None or transport.is_closing():
                self.disconnects += 1
                return
            await asyncio.sleep(DISCONNECT_POLL_S)


async def serve(host: str, port: int, api_key: str, events: int, coalesce: bool, faults: float,
                overloaded: bool = False, rate_limited: dict[str, float] | None = None) -> None:
    """Run until SIGINT or SIGTERM; prints the URL once listening, for whoever started us."""
    fake = FakeAnthropic(api_key, events=events, record=False, coalesce=coalesce, faults=faults)
    fake.overloaded = overloaded
    fake.rate_limited = rate_limited or {}
    url = await fake.start(host, port)
    print(f"listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await fake.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fake_anthropic", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--events", type=int, default=1, help="text_delta events per default reply")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="the upstream key to require")
    parser.add_argument(
        "--coalesce", action="store_true", help="write each stream at once, not event by event"
    )
    parser.add_argument("--faults", type=float, default=0.0, help="share of replies that misbehave (0 to 1)")
    parser.add_argument("--overloaded", action="store_true", help="answer every message with 529 overloaded_error")
    parser.add_argument("--rate-limit", action="append", default=[], metavar="FAMILY=SECONDS",
                        help="answer models whose ID holds FAMILY with 429 and this retry-after (repeatable)")
    args = parser.parse_args(argv)
    try:
        rate_limited = {family: float(seconds) for family, _, seconds in (item.partition("=") for item in args.rate_limit)}
    except ValueError:
        parser.error("--rate-limit takes FAMILY=SECONDS, e.g. opus=30")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.api_key, args.events, args.coalesce, args.faults, args.overloaded,
                          rate_limited))


if __name__ == "__main__":
    main()
