"""The upstream's answer as antex/upstream/client.py hands it on: status and headers at once,
the body as it arrives (decoded, and paused at the socket while the reader is behind)."""
from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, AsyncIterator

from multidict import CIMultiDictProxy

from antex.upstream.wire import BrokenResponse, Decoder

if TYPE_CHECKING:
    from antex.upstream.client import Client, _Connection

PAUSE_ABOVE = 1024 * 1024  # received but not yet taken by the reader: the socket waits until it is


class Response:
    """The upstream's answer: status and headers at once, the body as it arrives."""

    __slots__ = ("status", "reason", "headers", "_connection", "_client", "_chunks", "_buffered", "_done", "_error",
                 "_waiter", "_decoder", "_closed")

    def __init__(self, status: int, reason: str, headers: CIMultiDictProxy, connection: "_Connection",
                 client: Client, decoder: Decoder | None) -> None:
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
        self._decoder = decoder
        self._closed = False

    @property
    def complete(self) -> bool:
        """The whole body arrived: closing now gives the connection back with nothing left to read."""
        return self._done and self._error is None

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
            await self._wait()
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
            else:  # inline, not self._wait(): one frame less per wait on the stream's hot path
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None

    async def _wait(self) -> None:
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
            except BrokenResponse as exc:
                self._fail(exc)
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
        return decoder.finish() if decoder is not None else b""
