"""A small keep-alive HTTP/1.1 client for the one upstream, on asyncio's own transports.

Antex sends one kind of request to one origin: a POST whose body is already in hand, answered by
JSON or by a stream of server-sent events. aiohttp's general-purpose ClientSession cost about 250k
CPU instructions more per proxied request than this client (URL objects, cookie jar, tracing,
payload and timer machinery): about as much as all of Antex's own work. Here a request is one
buffer written to a pooled connection, the answer's head is parsed with bytes methods, and its
body is handed on as it arrives, chunked and gzip framing undone. Connections are reused while
the server keeps them open; nothing is ever retried (a POST is not idempotent).

The wire format itself (heads, framings, codings) is antex/http1.py's. Failures are
`UpstreamError`s (`ConnectFailed`, `TLSFailed`, `BrokenResponse`) or `TimeoutError`:
connecting takes at most `connect_timeout_s`, and an answer with no byte for `idle_timeout_s` is
abandoned (a slow but live stream never is).
"""
from __future__ import annotations

import asyncio
import socket
import ssl
import zlib
from collections import deque
from typing import AsyncIterator, Iterable
from urllib.parse import urlsplit

from multidict import CIMultiDictProxy

from antex import http1
from antex.http1 import BrokenResponse, UpstreamError

PAUSE_ABOVE = 1024 * 1024  # received but not yet taken by the reader: the socket waits until it is
KEEPALIVE_S = 60.0  # an idle pooled connection older than this is closed rather than reused
DNS_TTL_S = 300.0  # the upstream's addresses are looked up again after this long


class ConnectFailed(UpstreamError):
    """No connection: refused, unreachable, or the name does not resolve."""


class TLSFailed(ConnectFailed):
    """The TLS handshake failed (e.g. a plain-HTTP server, a bad certificate)."""


class Client:
    """Keep-alive connections to one origin (`base_url`'s scheme, host and port)."""

    def __init__(self, base_url: str, *, connect_timeout_s: float, idle_timeout_s: float,
                 ssl_context: ssl.SSLContext | None = None) -> None:
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
        self._idle: list[_Connection] = []  # most recently used last
        self._busy: set[_Connection] = set()
        self._closed = False
        self._addresses: list[tuple[int, str]] = []  # (family, address) from the last lookup...
        self._addresses_until = 0.0  # ...good until then
        self._lookup: asyncio.Future | None = None  # the lookup in progress, shared by every connect

    @property
    def in_flight(self) -> int:
        return len(self._busy)

    async def post(self, path: str, headers: Iterable[tuple[str, str]], body: bytes) -> "Response":
        """Send `body` to base path + `path` (which may carry a query string); returns once the
        answer's head arrived. The caller reads the body and must close the Response."""
        head = http1.request_head(self.base_path + path, self.host_header, headers, len(body))
        connection = self._reusable() or await self._connect()
        self._busy.add(connection)
        try:
            return await connection.send(head, body, self)
        except BaseException:
            self._busy.discard(connection)
            connection.close()
            raise

    def _reusable(self) -> "_Connection | None":
        now = asyncio.get_running_loop().time()
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.open and now - connection.idle_since < KEEPALIVE_S:
                return connection
            connection.close()
        return None

    async def _connect(self) -> "_Connection":
        """A new connection, trying the upstream's addresses in turn (all within connect_timeout_s)."""
        if self._closed:
            raise ConnectFailed("the client is closed")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                failure: OSError | None = None
                for family, address in await self._resolve():
                    try:
                        _, connection = await loop.create_connection(
                            lambda: _Connection(self.idle_timeout_s), address, self.port, family=family, ssl=self.ssl,
                            server_hostname=self.host if self.ssl else None)
                        return connection
                    except ssl.SSLError:
                        raise
                    except OSError as exc:  # refused or unreachable: the next address may answer
                        failure = exc
                raise failure or OSError("no address")
        except ssl.SSLError as exc:
            raise TLSFailed(f"TLS handshake with {self.host}:{self.port} failed: {exc}") from None
        except OSError as exc:  # refused, unreachable, unresolvable (socket.gaierror)
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc}") from None

    async def _resolve(self) -> list[tuple[int, str]]:
        """The upstream's addresses, looked up at most once per DNS_TTL_S however many connect at once."""
        if self._addresses and asyncio.get_running_loop().time() < self._addresses_until:
            return self._addresses
        if self._lookup is None:
            self._lookup = asyncio.ensure_future(self._look_up())
            self._lookup.add_done_callback(lambda lookup: lookup.cancelled() or lookup.exception())  # seen, if nobody waits
        return await asyncio.shield(self._lookup)  # one caller's timeout does not cancel everyone's lookup

    async def _look_up(self) -> list[tuple[int, str]]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        finally:
            self._lookup = None
        self._addresses = list(dict.fromkeys((family, sockaddr[0]) for family, _, _, _, sockaddr in infos))
        self._addresses_until = loop.time() + DNS_TTL_S
        return self._addresses

    def release(self, connection: "_Connection") -> None:
        """Take back a connection whose answer was read to its end (or close it, if it cannot be reused)."""
        self._busy.discard(connection)
        if not connection.reusable or self._closed:
            connection.close()
            return
        connection.resume()  # paused for flow control by its last answer: never pooled that way
        now = connection.idle_since = asyncio.get_running_loop().time()
        idle = self._idle
        idle.append(connection)
        while now - idle[0].idle_since >= KEEPALIVE_S:  # the least recently used, idle too long
            idle.pop(0).close()

    def forget(self, connection: "_Connection") -> None:
        """A pooled connection was closed (by the server, or by us)."""
        try:
            self._idle.remove(connection)
        except ValueError:
            pass

    def discard(self, connection: "_Connection") -> None:
        self._busy.discard(connection)
        connection.close()

    async def close(self) -> None:
        """Close every connection, idle or in use."""
        self._closed = True
        for connection in [*self._idle, *self._busy]:
            connection.close()
        self._idle.clear()
        self._busy.clear()


class Response:
    """The upstream's answer: status and headers at once, the body as it arrives."""

    __slots__ = ("status", "reason", "headers", "_connection", "_client", "_chunks", "_buffered", "_done", "_error",
                 "_waiter", "_decoder", "_closed")

    def __init__(self, status: int, reason: str, headers: CIMultiDictProxy, connection: "_Connection",
                 client: Client) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self._connection = connection
        self._client = client
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future | None = None
        self._decoder = http1.decoder_for(headers.get("content-encoding"))
        self._closed = False

    async def __aenter__(self) -> "Response":
        return self

    async def __aexit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Give the connection back when the body was read to the end; otherwise close it."""
        if self._closed:
            return
        self._closed = True
        connection, self._connection = self._connection, None
        connection.response = None
        if self._done and self._error is None:
            self._client.release(connection)
        else:
            self._client.discard(connection)

    async def read(self) -> bytes:
        """The whole body."""
        if self._done and self._decoder is None and self._error is None:  # the usual JSON answer: all here
            chunks, self._chunks = self._chunks, deque()
            return b"".join(chunks)
        parts = []
        async for chunk in self.iter_chunks():
            parts.append(chunk)
        return b"".join(parts)

    async def peek(self) -> bytes:
        """The body received so far, waiting for its first bytes; iter_chunks still yields them."""
        chunks = self._chunks
        while not chunks and self._error is None and not self._done:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._error is not None and not chunks:
            raise self._error
        if len(chunks) > 1:
            joined = b"".join(chunks)
            chunks.clear()
            chunks.append(joined)
        return chunks[0] if chunks else b""

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: each time, everything received since the last one."""
        chunks = self._chunks
        while True:
            if chunks:
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                self._connection.resume()
                if data:
                    yield data
            elif self._error is not None:
                raise self._error
            elif self._done:
                tail = self._flush_decoder()
                if tail:
                    yield tail
                return
            else:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None

    # called by the connection

    def _feed(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                self._fail(BrokenResponse(f"the body does not decode: {exc}"))
                return
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered > PAUSE_ABOVE:
                self._connection.pause()
            self._wake()

    def _finish(self) -> None:
        self._done = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self._error is None and not self._done:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _flush_decoder(self) -> bytes:
        decoder, self._decoder = self._decoder, None
        return http1.finish_decoding(decoder) if decoder is not None else b""


class _Connection(asyncio.Protocol):
    """One connection: writes requests, parses answers, feeds their bodies to the Response."""

    def __init__(self, idle_timeout_s: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.idle_timeout_s = idle_timeout_s
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.reusable = False
        self.idle_since = 0.0
        self.response: Response | None = None
        self._head = bytearray()
        self._head_waiter: asyncio.Future | None = None
        self._client: Client | None = None
        self._body = None  # http1.Length, Chunked or UntilClose while a body is arriving
        self._keep_alive = False  # the answer being read allows another request after it
        self._last_data = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.open = True

    def data_received(self, data: bytes) -> None:
        self._last_data = self.loop.time()
        try:
            if self._body is not None:
                self._body_data(data)
            elif self._head_waiter is not None:
                self._head_data(data)
            else:  # bytes nobody asked for (an idle connection): it cannot be trusted again
                self.close()
        except BrokenResponse as exc:
            self._abort(exc)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self.reusable = False
        self._stop_timer()
        if self._client is not None and self.response is None:  # idle in the pool: leave it
            self._client.forget(self)
        body = self._body
        if body is not None and body.until_close and exc is None:
            self._body = None
            self.response._finish()
        else:
            self._abort(BrokenResponse("the upstream closed the connection mid-answer" + (f": {exc}" if exc else "")))

    # requests

    async def send(self, head: bytes, body: bytes, client: Client) -> Response:
        if not self.open:
            raise BrokenResponse("the connection closed before the request was sent")
        self.reusable = False
        self._client = client
        self._head.clear()
        self._head_waiter = waiter = self.loop.create_future()
        self.transport.writelines((head, body))
        self._last_data = self.loop.time()
        self._timer = self.loop.call_at(self._last_data + self.idle_timeout_s, self._check_idle)
        try:
            return await waiter
        finally:
            self._head_waiter = None

    def _head_data(self, data: bytes) -> None:
        head = self._head
        start = max(len(head) - 3, 0)
        head += data
        end = head.find(b"\r\n\r\n", start)
        if end < 0:
            if len(head) > http1.MAX_HEAD_BYTES:
                raise BrokenResponse("the answer's head is too large")
            return
        status, reason, headers, keep_alive = http1.parse_head(bytes(head[:end]))
        rest = bytes(head[end + 4:])
        head.clear()
        if 100 <= status < 200:  # 100 Continue, 103 Early Hints: the real head follows
            if rest:
                self._head_data(rest)
            return
        response = self.response = Response(status, reason, headers, self, self._client)
        self._body = body = http1.body_framing(status, headers)
        self._keep_alive = keep_alive and not body.until_close
        waiter = self._head_waiter
        if not waiter.done():
            waiter.set_result(response)
        if body.complete:
            self._body_done()
        elif rest:
            self._body_data(rest)

    def _body_data(self, data: bytes) -> None:
        body = self._body
        pieces = body.feed(data)
        if pieces:  # a stream's dozens of chunks per read reach the reader as one
            self.response._feed(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        if body.complete:
            if body.extra:  # bytes after the end of the answer: the connection is out of step
                self._keep_alive = False
            self._body_done()

    def _body_done(self) -> None:
        self._body = None
        self._stop_timer()
        self.reusable = self._keep_alive and self.open
        self.response._finish()

    def _abort(self, error: BaseException) -> None:
        """Fail whatever waits on this connection, and close it."""
        self._stop_timer()
        self._body = None
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
        self._body = None  # whatever still arrives is nobody's
        self._stop_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


