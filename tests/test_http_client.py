"""The upstream HTTP/1.1 client (antex/upstream/client.py, wire.py), against scripted servers.

The gateway tests drive it through the fake Anthropic server (aiohttp, well-behaved HTTP); these
cover what a well-behaved server never sends: odd framing, broken heads, early closes, stalls.
"""
from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import zlib
from contextlib import asynccontextmanager
from typing import Awaitable, Callable

import pytest
import trustme

from antex.upstream import client as http_client, wire
from antex.upstream.client import Client
from antex.upstream.wire import BrokenResponse, ConnectFailed, UpstreamError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


@asynccontextmanager
async def server(handler: Handler):
    """A loopback server running `handler` per connection; yields (base URL, connections made)."""
    connections: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", connections
    finally:
        srv.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(head, body) of one request."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    return head, await reader.readexactly(length)


def answering(*replies: bytes, close: bool = False) -> Handler:
    """A handler sending `replies` in turn, one per request on the connection."""
    async def handler(reader, writer):
        for reply in replies:
            await read_request(reader)
            writer.write(reply)
            await writer.drain()
        if not close:
            await reader.read()  # keep the connection open until the client closes it
    return handler


def client(url: str, idle: float = 5.0) -> Client:
    return Client(url, connect_timeout_s=2, idle_timeout_s=idle)


async def fetch(c: Client, body: bytes = b"{}", headers=()) -> tuple[int, dict, bytes]:
    async with await c.post("/v1/messages", list(headers), body) as response:
        return response.status, dict(response.headers), await response.read()


# pure parts

def test_a_request_header_cannot_split_the_head() -> None:
    with pytest.raises(UpstreamError):
        wire.request_head("/v1/messages", "h", [("x-a", "b\r\nx-injected: 1")], 0)
    with pytest.raises(UpstreamError):
        wire.request_head("/v1/messages", "h", [("x-a", "b\nx")], 0)


def test_base_url_parts() -> None:
    c = Client("https://api.example.com/prefix/", connect_timeout_s=1, idle_timeout_s=1)
    assert (c.host, c.port, c.host_header, c.base_path, c.ssl is not None) == ("api.example.com", 443, "api.example.com", "/prefix", True)
    c = Client("http://[::1]:8080", connect_timeout_s=1, idle_timeout_s=1)
    assert (c.host, c.port, c.host_header, c.base_path, c.ssl) == ("::1", 8080, "[::1]:8080", "", None)
    with pytest.raises(ValueError):
        Client("ftp://x", connect_timeout_s=1, idle_timeout_s=1)


# against servers

async def test_request_bytes_and_keep_alive_reuse() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(reader, writer):
        for _ in range(2):
            seen.append(await read_request(reader))
            writer.write(OK_HEAD + b"Content-Length: 2\r\n\r\n{}")
        await reader.read()

    async with server(handler) as (url, connections):
        c = client(url + "/base")
        for _ in range(2):
            assert await fetch(c, b'{"a":1}', [("x-api-key", "k"), ("anthropic-version", "2023-06-01")]) == (
                200, {"Content-Type": "application/json", "Content-Length": "2"}, b"{}")
        await c.close()
    assert len(connections) == 1  # the second request reused the first connection
    head, body = seen[0]
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /base/v1/messages HTTP/1.1" and body == b'{"a":1}'
    assert set(lines[1:-2]) == {b"Host: 127.0.0.1:" + url.rsplit(":", 1)[1].encode(), b"Content-Length: 7",
                                b"x-api-key: k", b"anthropic-version: 2023-06-01"}


async def test_chunked_stream_arrives_piece_by_piece() -> None:
    release = asyncio.Event()

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await read_request(reader)
        writer.write(OK_HEAD + b"Content-Length: 4\r\n\r\nnext")
        await reader.read()

    async with server(handler) as (url, connections):
        c = client(url)
        async with await c.post("/v1/messages", [], b"{}") as response:
            chunks = response.iter_chunks()
            assert await chunks.__anext__() == b"first"  # before the rest was even sent
            release.set()
            assert [chunk async for chunk in chunks] == [b"second"]
        assert (await fetch(c))[2] == b"next"  # the connection was given back...
        await c.close()
    assert len(connections) == 1  # ...and reused


async def test_connection_close_and_http_1_0_bodies() -> None:
    async with server(answering(OK_HEAD + b"Connection: close\r\nContent-Length: 2\r\n\r\nok", close=True)) as (url, connections):
        c = client(url)
        assert (await fetch(c))[2] == b"ok"
        assert (await fetch(c))[2] == b"ok"
        await c.close()
    assert len(connections) == 2  # not reused after Connection: close
    async with server(answering(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", close=True)) as (url, _):
        c = client(url)
        assert (await fetch(c))[2] == b"until the end"
        await c.close()


async def test_repeated_headers_are_kept_and_connection_close_is_honoured() -> None:
    reply = b"HTTP/1.1 529 Overloaded\r\nContent-Type: application/json\r\nX-A: 1\r\nx-a: 2\r\nEmpty:\r\nContent-Length: 2\r\n\r\n{}"
    async with server(answering(reply, reply)) as (url, connections):
        c = client(url)
        async with await c.post("/", [], b"") as response:
            assert (response.status, response.reason) == (529, "Overloaded")
            assert response.headers.getall("x-a") == ["1", "2"] and response.headers["empty"] == ""
            await response.read()
        await fetch(c)
        await c.close()
    assert len(connections) == 1


CHUNKED = b"5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n"


async def test_chunked_bodies_are_the_same_however_the_bytes_are_split() -> None:
    for size in (1, 2, 3, 7, len(CHUNKED)):
        async def split(reader, writer):
            await read_request(reader)
            writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
            for start in range(0, len(CHUNKED), size):
                writer.write(CHUNKED[start:start + size])
                await writer.drain()
                await asyncio.sleep(0)
            await reader.read()

        async with server(split) as (url, _):
            c = client(url)
            assert (await fetch(c))[2] == b"hello 0123456789", size
            assert c._idle  # complete, and reusable
            await c.close()


async def test_interim_answers_are_skipped_and_204_has_no_body() -> None:
    reply = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n" + OK_HEAD + b"Content-Length: 2\r\n\r\nok"
    async with server(answering(reply, b"HTTP/1.1 204 No Content\r\n\r\n")) as (url, _):
        c = client(url)
        assert await fetch(c) == (200, {"Content-Type": "application/json", "Content-Length": "2"}, b"ok")
        assert await fetch(c) == (204, {}, b"")
        await c.close()


async def test_compressed_bodies_are_decoded_and_a_cut_one_is_broken() -> None:
    text = b'{"content": "' + b"z" * 5000 + b'"}'
    zipped = gzip.compress(text)
    deflated = zlib.compress(text)
    replies = [OK_HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(zipped), zipped),
               OK_HEAD + b"Content-Encoding: deflate\r\nContent-Length: %d\r\n\r\n%s" % (len(deflated), deflated),
               OK_HEAD + b"Content-Encoding: gzip\r\nContent-Length: 20\r\n\r\n" + zipped[:20]]
    async with server(answering(*replies)) as (url, _):
        c = client(url)
        assert (await fetch(c))[2] == text
        assert (await fetch(c))[2] == text
        with pytest.raises(BrokenResponse):
            await fetch(c)
        await c.close()


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # then the server closes
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    b"HTTP/1.1 200 OK\r\nContent-Le",
    b"",
    b"NOT HTTP AT ALL\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    "HTTP/1.1 200 OK\r\nContent-Length: ２\r\n\r\nok".encode(),  # a fullwidth digit, which int() would take
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nX: " + b"a" * (70 * 1024),
    # what a hand-written parser lets through and llhttp does not
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x10\r\n0123456789abcdef\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello world\r\n",
    b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n", b"ICY 200 OK\r\n\r\n", b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/1.1 abc OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n folded: value\r\n\r\n", b"HTTP/1.1 200 OK\r\nName : value\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nA: b\nInjected: yes\r\n\r\n", b"HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n",
    "HTTP/1.1 ２００ OK\r\n\r\n".encode(),
])
async def test_broken_answers_are_upstream_errors(reply: bytes) -> None:
    async with server(answering(reply, close=True)) as (url, _):
        c = client(url)
        with pytest.raises(UpstreamError):
            await fetch(c)
        assert not c._idle and not c._busy  # the broken connection was not kept
        await c.close()


async def test_bytes_after_the_body_make_the_connection_unusable() -> None:
    async with server(answering(OK_HEAD + b"Content-Length: 2\r\n\r\nokEXTRA", OK_HEAD + b"Content-Length: 2\r\n\r\nok")) as (url, connections):
        c = client(url)
        assert (await fetch(c))[2] == b"ok"
        assert not c._idle
        await c.close()


async def test_idle_timeout_waiting_for_the_head_and_mid_body() -> None:
    async def silent(reader, writer):
        await read_request(reader)
        await reader.read()

    async def stalls(reader, writer):
        await read_request(reader)
        writer.write(OK_HEAD + b"Content-Length: 10\r\n\r\nhalf")
        await reader.read()

    for handler in (silent, stalls):
        async with server(handler) as (url, _):
            c = client(url, idle=0.3)
            started = asyncio.get_running_loop().time()
            with pytest.raises(TimeoutError):
                await fetch(c)
            assert 0.25 < asyncio.get_running_loop().time() - started < 2
            await c.close()


async def test_a_slow_but_live_stream_is_never_timed_out() -> None:
    async def trickle(reader, writer):
        await read_request(reader)
        writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(8):  # 1.2 s in all, never 0.3 s without a byte
            await asyncio.sleep(0.15)
            writer.write(b"1\r\nx\r\n")
        writer.write(b"0\r\n\r\n")
        await reader.read()

    async with server(trickle) as (url, _):
        c = client(url, idle=0.3)
        assert (await fetch(c))[2] == b"x" * 8
        await c.close()


async def test_a_slow_reader_pauses_the_socket_and_loses_nothing(monkeypatch) -> None:
    body = bytes(range(256)) * 16 * 1024  # 4 MiB, several times the pause threshold
    pauses = []
    pause = http_client._Connection.pause
    monkeypatch.setattr(http_client._Connection, "pause", lambda self: pauses.append(1) or pause(self))

    async with server(answering(OK_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)) as (url, _):
        c = client(url, idle=0.5)
        received = []
        async with await c.post("/", [], b"") as response:
            async for chunk in response.iter_chunks():
                received.append(chunk)
                await asyncio.sleep(0.05)  # slower than the socket: longer than the idle timeout in all
        assert b"".join(received) == body and pauses
        await c.close()


async def test_a_connection_paused_for_flow_control_never_goes_back_to_the_pool_paused() -> None:
    """A 1.2 MiB answer read late: its last read both pauses the socket (over 1 MiB buffered) and
    ends the body. The connection must not be pooled paused: the next request on it would wait
    forever (a paused socket is never idle, so the idle timeout never fires either)."""
    big = b"y" * (1200 * 1024)
    replies = (OK_HEAD + b"Content-Length: %d\r\n\r\n" % len(big) + big, OK_HEAD + b"Content-Length: 2\r\n\r\n{}")
    async with server(answering(*replies)) as (url, connections):
        c = client(url, idle=30)
        async with await c.post("/", [], b"") as response:
            await asyncio.sleep(0.3)  # read late: the whole answer is buffered by now
            assert await response.read() == big
        async with asyncio.timeout(5):
            assert (await fetch(c))[2] == b"{}"
        assert len(connections) == 1  # reused, and working
        await c.close()


async def test_leaving_an_answer_unread_closes_its_connection() -> None:
    closed = asyncio.Event()

    async def endless(reader, writer):
        await read_request(reader)
        writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            while True:
                writer.write(b"1\r\nx\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)
        except ConnectionError:
            closed.set()

    async with server(endless) as (url, _):
        c = client(url)
        async with await c.post("/", [], b"") as response:
            await response.iter_chunks().__anext__()
        await asyncio.wait_for(closed.wait(), 5)
        assert not c._idle and not c._busy
        await c.close()


async def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    async with server(answering(OK_HEAD + b"Content-Length: 2\r\n\r\nok", close=True)) as (url, connections):
        c = client(url)  # no Connection: close, but the server hangs up after one answer
        assert (await fetch(c))[2] == b"ok"
        await asyncio.sleep(0.1)
        assert not c._idle  # dropped from the pool when the server closed it
        assert (await fetch(c))[2] == b"ok"
        await c.close()
    assert len(connections) == 2


async def test_connect_failures() -> None:
    async with server(answering()) as (url, _):
        pass  # closed: the port now refuses
    with pytest.raises(ConnectFailed):
        await fetch(client(url))
    async def plain_http(reader, writer):  # answers a TLS hello as a plain-HTTP server would
        await reader.read(1)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()

    async with server(plain_http) as (plain, _):
        with pytest.raises(http_client.TLSFailed):
            await fetch(client(plain.replace("http://", "https://")))


async def test_cancelling_a_request_closes_its_connection() -> None:
    async def silent(reader, writer):
        await read_request(reader)
        await reader.read()

    async with server(silent) as (url, _):
        c = client(url)
        task = asyncio.ensure_future(fetch(c))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not c._idle and not c._busy
        await c.close()


# TLS, as every real upstream is reached

@asynccontextmanager
async def tls_server(handler: Handler):
    """`server`, over TLS with a throwaway CA; yields (base URL, a client context trusting it)."""
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    srv = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_context)
    try:
        yield f"https://localhost:{srv.sockets[0].getsockname()[1]}", client_context
    finally:
        srv.close()


async def tls_round_trip() -> None:
    """Two requests on one TLS connection: a JSON answer and a chunked stream; then a wrong name."""
    async def handler(reader, writer):
        head, body = await read_request(reader)
        assert body == b'{"n":1}' and b"Host: localhost:" in head
        writer.write(OK_HEAD + b"Content-Length: 2\r\n\r\n{}")
        await read_request(reader)
        writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(b"1\r\n%d\r\n" % i for i in range(10)) + b"0\r\n\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    async with tls_server(handler) as (url, context):
        c = Client(url, connect_timeout_s=2, idle_timeout_s=5, ssl_context=context)
        assert await fetch(c, b'{"n":1}') == (200, {"Content-Type": "application/json", "Content-Length": "2"}, b"{}")
        assert (await fetch(c))[2] == b"0123456789"
        await c.close()
        wrong_name = Client(url.replace("localhost", "127.0.0.1"), connect_timeout_s=2, idle_timeout_s=5, ssl_context=context)
        with pytest.raises(http_client.TLSFailed):  # the certificate names localhost only
            await fetch(wrong_name)
        untrusted = Client(url, connect_timeout_s=2, idle_timeout_s=5)  # the system's CAs do not know this one
        with pytest.raises(http_client.TLSFailed):
            await fetch(untrusted)


async def test_tls_round_trip() -> None:
    await tls_round_trip()


def test_tls_round_trip_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")  # what `antex serve` runs on
    uvloop.run(tls_round_trip())


async def test_the_upstream_name_is_looked_up_once_for_many_connections(monkeypatch) -> None:
    loop = asyncio.get_running_loop()
    lookups = []
    real = loop.getaddrinfo

    async def counting(*args, **kwargs):
        lookups.append(args[0])
        await asyncio.sleep(0.05)  # slow enough that every connect below waits on the same lookup
        return await real(*args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", counting)
    async with server(answering(OK_HEAD + b"Content-Length: 2\r\n\r\nok")) as (url, connections):
        c = client(url.replace("127.0.0.1", "localhost"))
        answers = await asyncio.gather(*[fetch(c) for _ in range(5)])
        assert [body for _, _, body in answers] == [b"ok"] * 5 and len(connections) == 5
        assert lookups == ["localhost"]
        await c.close()
    with pytest.raises((ConnectFailed, TimeoutError)):  # a resolver without network may just take too long
        await fetch(client("http://antex-test.invalid"))


# the pool's limits

async def test_connections_per_upstream_are_capped_and_requests_wait_their_turn() -> None:
    open_now, most = 0, 0

    async def slow(reader, writer):
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        try:
            while True:
                await read_request(reader)
                await asyncio.sleep(0.05)
                writer.write(OK_HEAD + b"Content-Length: 2\r\n\r\nok")
                await writer.drain()
        finally:
            open_now -= 1

    async with server(slow) as (url, connections):
        c = Client(url, connect_timeout_s=2, idle_timeout_s=5, max_connections=2)
        answers = await asyncio.gather(*[fetch(c) for _ in range(8)])
        assert [body for _, _, body in answers] == [b"ok"] * 8
        assert len(connections) == 2 and most == 2
        await c.close()


async def test_idle_connections_are_kept_for_keepalive_s_or_what_the_server_says() -> None:
    short = OK_HEAD + b"Keep-Alive: timeout=1.3, max=100\r\nContent-Length: 2\r\n\r\nok"
    async with server(answering(short, short, short)) as (url, connections):
        c = Client(url, connect_timeout_s=2, idle_timeout_s=5, keepalive_s=15)
        await fetch(c)
        await fetch(c)  # at once: reused
        assert len(connections) == 1
        await asyncio.sleep(0.4)  # past what the server allows, less a second
        await fetch(c)
        assert len(connections) == 2
        await c.close()
    plain = OK_HEAD + b"Content-Length: 2\r\n\r\nok"
    async with server(answering(plain, plain)) as (url, connections):
        c = Client(url, connect_timeout_s=2, idle_timeout_s=5, keepalive_s=0.2)
        await fetch(c)
        await asyncio.sleep(0.3)
        await fetch(c)
        assert len(connections) == 2
        await c.close()


async def test_a_reused_connection_closed_before_answering_is_retried_once_on_a_new_one() -> None:
    async def closes_when_reused(reader, writer):
        await read_request(reader)
        writer.write(OK_HEAD + b"Content-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)  # the second request on this connection: hang up without a byte
        writer.transport.abort()

    async with server(closes_when_reused) as (url, connections):
        c = client(url)
        assert (await fetch(c))[2] == b"ok"
        assert (await fetch(c))[2] == b"ok"  # retried on a new connection, invisibly
        assert len(connections) == 2
        await c.close()

    async def never_answers(reader, writer):
        await read_request(reader)
        writer.transport.abort()

    async with server(never_answers) as (url, connections):
        c = client(url)
        with pytest.raises(BrokenResponse):  # a new connection is not retried: the request may have arrived
            await fetch(c)
        assert len(connections) == 1
        await c.close()


async def test_a_first_address_that_never_answers_does_not_hold_up_the_next(monkeypatch) -> None:
    """Happy Eyeballs: the second address is tried 250 ms after the first, not after its timeout."""
    blackhole = socket.socket()  # a listener whose full backlog drops every new SYN: connects hang
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    hole_port = blackhole.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", hole_port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()

    async with server(answering(OK_HEAD + b"Content-Length: 2\r\n\r\nok")) as (url, _):
        port = int(url.rsplit(":", 1)[1])

        async def two_addresses(host, port_, **kwargs):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", hole_port)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

        monkeypatch.setattr(loop, "getaddrinfo", two_addresses)
        c = Client(url.replace("127.0.0.1", "upstream.test"), connect_timeout_s=2, idle_timeout_s=5)
        assert (await fetch(c))[2] == b"ok"  # raced: well within the connect timeout
        await c.close()
    for held in (*fillers, blackhole):
        held.close()


async def test_decompression_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(wire, "MAX_DECODED_BYTES", 1024 * 1024)
    bomb = gzip.compress(b"\0" * (4 * 1024 * 1024))  # 4 KiB that inflate to 4 MiB
    async with server(answering(OK_HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb) + bomb,
                                close=True)) as (url, _):
        c = client(url)
        with pytest.raises(BrokenResponse, match="inflates past"):
            await fetch(c)
        await c.close()
