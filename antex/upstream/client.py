"""A small keep-alive HTTP/1.1 client for one upstream, on asyncio's own transports.

Antex sends one kind of request to one origin: a POST whose body is already in hand, answered by
JSON or by a stream of server-sent events. aiohttp's general-purpose ClientSession cost about 250k
CPU instructions more per proxied request than this client (URL objects, cookie jar, tracing,
payload and timer machinery): about as much as all of Antex's own work. Here a request is one
buffer written to a pooled connection; the answer is parsed by llhttp (httptools, the parser
uvicorn uses), strict where hand-written parsers are lax (chunk sizes such as `0x10`,
Content-Length next to Transfer-Encoding, repeated Content-Length), and its body is handed on as
it arrives, gzip undone (bounded, antex/upstream/wire.py).

Connections are reused while the server keeps them open, for `keepalive_s` at most (less when the
server's Keep-Alive header says so), at most `max_connections` at once. Nothing is retried (a POST
is not idempotent) except once, on a new connection, when a reused idle connection turns out to
have been closed before any byte of the answer (the request never reached the server). Addresses
are raced Happy-Eyeballs style (aiohappyeyeballs); a proxy tunnel comes from antex/upstream/proxy.py.

Failures are `UpstreamError`s (`ConnectFailed`, `TLSFailed`, `BrokenResponse`) or `TimeoutError`:
connecting takes at most `connect_timeout_s`, and an answer with no byte for `idle_timeout_s` is
abandoned (a slow but live stream never is).
"""
from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from typing import Iterable
from urllib.parse import urlsplit

import aiohappyeyeballs
import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from antex.upstream import proxy as proxies
from antex.upstream.response import Response
from antex.upstream.wire import (BrokenResponse, ConnectFailed, StaleConnection, TLSFailed, UpstreamError, decoder_for,
                                 keep_alive_s, request_head)

__all__ = ["Client", "Response", "UpstreamError", "BrokenResponse", "ConnectFailed", "TLSFailed"]

MAX_HEAD_BYTES = 64 * 1024  # an answer's head larger than this is refused
DNS_TTL_S = 300.0  # the upstream's addresses are looked up again after this long
HAPPY_EYEBALLS_DELAY_S = 0.25  # RFC 8305's recommended head start of one address over the next


class Client:
    """Keep-alive connections to one origin (`base_url`'s scheme, host and port)."""

    def __init__(self, base_url: str, *, connect_timeout_s: float, idle_timeout_s: float,
                 ssl_context: ssl.SSLContext | None = None, max_connections: int = 512, keepalive_s: float = 15.0,
                 proxy: str = "") -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http:// or https:// URL: {base_url!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl = (ssl_context or ssl.create_default_context()) if url.scheme == "https" else None
        default_port = self.port == (443 if url.scheme == "https" else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if default_port else f"{host}:{self.port}"
        self.base_path = url.path.rstrip("/")
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self.keepalive_s = keepalive_s
        self.proxy = proxy
        self._idle: list[_Connection] = []  # most recently used last
        self._busy: set[_Connection] = set()
        self._connecting = 0
        self._slot_waiters: deque[asyncio.Future] = deque()  # requests waiting under max_connections
        self._closed = False
        self._addresses: list[tuple] = []  # getaddrinfo's answer...
        self._addresses_until = 0.0  # ...good until then
        self._lookup: asyncio.Future | None = None  # the lookup in progress, shared by every connect

    @property
    def in_flight(self) -> int:
        return len(self._busy)

    async def post(self, path: str, headers: Iterable[tuple[str, str]], body: bytes) -> "Response":
        """Send `body` to base path + `path` (which may carry a query string); returns once the
        answer's head arrived. The caller reads the body and must close the Response."""
        head = request_head(self.base_path + path, self.host_header, headers, len(body))
        connection = self._reusable() or await self._open()
        try:
            return await self._send(connection, head, body)
        except StaleConnection:  # the server had closed it while idle: the request never arrived
            return await self._send(await self._open(), head, body)

    async def _send(self, connection: "_Connection", head: bytes, body: bytes) -> "Response":
        self._busy.add(connection)
        try:
            return await connection.send(head, body, self)
        except BaseException:
            self.discard(connection)
            raise

    def _reusable(self) -> "_Connection | None":
        now = asyncio.get_running_loop().time()
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.open and now < connection.reuse_until:
                return connection
            connection.close()
        return None

    async def _open(self) -> "_Connection":
        """A connection for the next request: a new one, once fewer than max_connections are busy
        (an idle one given back meanwhile is taken instead)."""
        while len(self._busy) + self._connecting >= self.max_connections:
            waiter = asyncio.get_running_loop().create_future()
            self._slot_waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():  # woken, then cancelled: wake the next one instead
                    self._slot_freed()
                raise
            connection = self._reusable()
            if connection is not None:
                return connection
        self._connecting += 1
        try:
            return await self._connect()
        finally:
            self._connecting -= 1

    def _slot_freed(self) -> None:
        waiters = self._slot_waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(self) -> "_Connection":
        """A new connection (within connect_timeout_s): through the proxy when there is one, else
        to the upstream's addresses, raced Happy-Eyeballs style."""
        if self._closed:
            raise ConnectFailed("the client is closed")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                if self.proxy:
                    sock = await proxies.tunnel(self.proxy, self.host, self.port)
                else:
                    sock = await aiohappyeyeballs.start_connection(await self._resolve(),
                                                                   happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY_S)
                try:
                    _, connection = await loop.create_connection(
                        lambda: _Connection(self.idle_timeout_s), sock=sock, ssl=self.ssl,
                        server_hostname=self.host if self.ssl else None)
                except BaseException:
                    sock.close()
                    raise
                return connection
        except ssl.SSLError as exc:
            raise TLSFailed(f"TLS handshake with {self.host}:{self.port} failed: {exc}") from None
        except OSError as exc:  # refused, unreachable, unresolvable (socket.gaierror)
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc}") from None

    async def _resolve(self) -> list[tuple]:
        """The upstream's addresses, looked up at most once per DNS_TTL_S however many connect at once."""
        if self._addresses and asyncio.get_running_loop().time() < self._addresses_until:
            return self._addresses
        if self._lookup is None:
            self._lookup = asyncio.ensure_future(self._look_up())
            self._lookup.add_done_callback(lambda lookup: lookup.cancelled() or lookup.exception())  # seen, if nobody waits
        return await asyncio.shield(self._lookup)  # one caller's timeout does not cancel everyone's lookup

    async def _look_up(self) -> list[tuple]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        finally:
            self._lookup = None
        self._addresses = list(dict.fromkeys(infos))
        self._addresses_until = loop.time() + DNS_TTL_S
        return self._addresses

    def release(self, connection: "_Connection") -> None:
        """Take back a connection whose answer was read to its end (or close it, if it cannot be reused)."""
        self._busy.discard(connection)
        if not connection.reusable or self._closed:
            connection.close()
            self._slot_freed()
            return
        connection.resume()  # paused for flow control by its last answer: never pooled that way
        now = asyncio.get_running_loop().time()
        connection.reuse_until = now + connection.keepalive_s
        idle = self._idle
        idle.append(connection)
        while idle[0].reuse_until <= now:  # the least recently used, idle too long (or never reusable)
            idle.pop(0).close()
            if not idle:
                break
        self._slot_freed()

    def forget(self, connection: "_Connection") -> None:
        """A pooled connection was closed (by the server, or by us)."""
        try:
            self._idle.remove(connection)
        except ValueError:
            pass

    def discard(self, connection: "_Connection") -> None:
        self._busy.discard(connection)
        connection.close()
        self._slot_freed()

    async def close(self) -> None:
        """Close every connection, idle or in use."""
        self._closed = True
        for connection in [*self._idle, *self._busy]:
            connection.close()
        self._idle.clear()
        self._busy.clear()


class _Connection(asyncio.Protocol):
    """One connection: writes requests; llhttp parses the answers; their bodies go to the Response."""

    def __init__(self, idle_timeout_s: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.idle_timeout_s = idle_timeout_s
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.reusable = False
        self.reuse_until = 0.0
        self.keepalive_s = 0.0
        self.response: Response | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._head_waiter: asyncio.Future | None = None
        self._client: Client | None = None
        self._reason = b""
        self._header_list: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._pieces: list[bytes] = []  # body pieces of one read, handed on as one
        self._interim = False  # a 1xx answer is being parsed: the real one follows
        self._until_close = False  # the body ends when the server closes
        self._answered = False  # the answer to the current request is complete
        self._out_of_step = False  # bytes beyond the answer: never reused
        self._reused = False
        self._received = False  # a byte of this request's answer arrived
        self._last_data = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.open = True

    def data_received(self, data: bytes) -> None:
        self._last_data = self.loop.time()
        if self._head_waiter is None and self.response is None:  # bytes nobody asked for: never trusted again
            self.close()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            self._abort(cause if isinstance(cause, UpstreamError) else BrokenResponse(f"not valid HTTP/1.1: {exc}"))
            return
        if self._pieces:
            self._flush_body()
        if self.response is None and self._head_waiter is not None:  # still no whole head
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._abort(BrokenResponse("the answer's head is too large"))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self.reusable = False
        self._stop_timer()
        if self._client is not None and self.response is None and self._head_waiter is None:  # idle in the pool
            self._client.forget(self)
            return
        response = self.response
        if self._until_close and exc is None and response is not None and not self._answered:
            self._answered = True
            response._finish()
        elif self._reused and not self._received and self._head_waiter is not None:
            self._abort(StaleConnection("the server closed the idle connection before answering"))
        else:
            self._abort(BrokenResponse("the upstream closed the connection mid-answer" + (f": {exc}" if exc else "")))

    # llhttp's callbacks

    def on_message_begin(self) -> None:
        if self._answered:  # a second answer to one request: the connection is out of step
            self._out_of_step = True

    def on_status(self, status: bytes) -> None:
        self._reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_list.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        pairs, self._header_list = self._header_list, []
        if 100 <= status < 200:  # 100 Continue, 103 Early Hints: the real head follows
            self._interim = True
            return
        headers = CIMultiDictProxy(CIMultiDict(
            (name.decode("latin-1"), value.decode("utf-8", "replace")) for name, value in pairs))
        transfer = headers.get("transfer-encoding")
        if transfer is not None and transfer.replace(" ", "").lower().split(",")[-1] != "chunked":
            raise BrokenResponse(f"unsupported Transfer-Encoding {transfer!r}")
        decoder = decoder_for(headers.get("content-encoding"))
        self._until_close = transfer is None and "content-length" not in headers and status not in (204, 304)
        self.keepalive_s = keep_alive_s(headers.get("keep-alive"), self._client.keepalive_s)
        response = self.response = Response(status, self._reason.decode("latin-1"), headers, self, self._client, decoder)
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def on_body(self, body: bytes) -> None:
        self._pieces.append(body)  # a stream's dozens of chunks per read reach the reader as one

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._pieces:
            self._flush_body()
        self._answered = True
        self._stop_timer()
        self.reusable = self._parser.should_keep_alive() and not self._until_close and not self._out_of_step and self.open
        if self.response is not None:
            self.response._finish()

    def _flush_body(self) -> None:
        pieces = self._pieces
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        pieces.clear()
        if self.response is not None and not self._answered:
            self.response._feed(data)

    # requests

    async def send(self, head: bytes, body: bytes, client: Client) -> Response:
        if not self.open:
            raise BrokenResponse("the connection closed before the request was sent")
        self._reused = self._client is not None
        self.reusable = False
        self._client = client
        self._answered = self._received = False
        self._head_bytes = 0
        self._head_waiter = waiter = self.loop.create_future()
        self.transport.writelines((head, body))
        self._last_data = self.loop.time()
        self._timer = self.loop.call_at(self._last_data + self.idle_timeout_s, self._check_idle)
        try:
            return await waiter
        finally:
            self._head_waiter = None

    def _abort(self, error: BaseException) -> None:
        """Fail whatever waits on this connection, and close it."""
        self._stop_timer()
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        elif self.response is not None:
            self.response._fail(error)
        self.close()

    # flow control and the idle timeout

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self._last_data = self.loop.time()  # paused time is the reader's, not the upstream's
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def _check_idle(self) -> None:
        """Fires at the earliest moment the idle timeout could be reached; re-arms if data came since."""
        self._timer = None
        now = self.loop.time()
        if self._paused:
            self._last_data = now
        deadline = self._last_data + self.idle_timeout_s
        if now < deadline:
            self._timer = self.loop.call_at(deadline, self._check_idle)
        else:
            self._abort(TimeoutError(f"no data from the upstream for {self.idle_timeout_s:g} seconds"))

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self.open = False
        self.reusable = False
        self._stop_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
