"""HTTP/1.1 on the wire, as pure functions: the request head Antex writes, the answer head it
reads, and the body framings (Content-Length, chunked, until close) and codings it undoes.

antex/http_client.py moves the bytes; everything here is testable without a socket.
"""
from __future__ import annotations

import zlib
from typing import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

MAX_HEAD_BYTES = 64 * 1024
MAX_CHUNK_LINE = 4 * 1024
NO_BODY_STATUSES = frozenset({204, 304})


class UpstreamError(Exception):
    """The upstream could not be reached, or broke the protocol or the connection."""


class BrokenResponse(UpstreamError):
    """The answer was cut off or is not valid HTTP/1.1."""


def request_head(target: str, host: str, headers: Iterable[tuple[str, str]], length: int) -> bytes:
    """A POST's head: the request line, Host, Content-Length, then `headers` as given."""
    lines = [f"POST {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in headers]
    text = "\r\n".join(lines)
    breaks = len(lines) - 1
    if text.count("\n") != breaks or text.count("\r") != breaks:  # a value must never split the head
        raise UpstreamError("a request header holds a line break")
    return (text + "\r\n\r\n").encode("utf-8", "surrogateescape")


def decoder_for(content_encoding: str | None):
    """A decompressor for the answer's Content-Encoding (None for none); BrokenResponse for one
    Antex never asks for."""
    if not content_encoding:
        return None
    encoding = content_encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib-wrapped, as the RFC says (auto-detected)
    if encoding == "identity":
        return None
    raise BrokenResponse(f"unsupported Content-Encoding {content_encoding!r}")


def finish_decoding(decoder) -> bytes:
    """The end of a compressed body; BrokenResponse when it is corrupt or cut short."""
    try:
        tail = decoder.flush()
    except zlib.error as exc:
        raise BrokenResponse(f"the body does not decode: {exc}") from None
    if not decoder.eof:
        raise BrokenResponse("the compressed body is cut short")
    return tail


def parse_head(head: bytes) -> tuple[int, str, CIMultiDictProxy, bool]:
    """(status, reason, headers, keep-alive) of an answer's head, without its blank line."""
    breaks = head.count(b"\r\n")
    if head.count(b"\n") != breaks or head.count(b"\r") != breaks:
        raise BrokenResponse("a bare CR or LF in the answer's head")
    lines = head.decode("utf-8", "replace").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not (code.isascii() and code.isdigit()):
        raise BrokenResponse(f"not an HTTP/1.1 status line: {lines[0][:100]!r}")
    headers = CIMultiDict()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():  # also refuses obsolete line folding
            raise BrokenResponse(f"a malformed header line: {line[:100]!r}")
        headers.add(name, value.strip(" \t"))
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    return int(code), reason, CIMultiDictProxy(headers), keep_alive


def body_framing(status: int, headers: CIMultiDictProxy) -> "Length | Chunked | UntilClose":
    """How the answer's body ends: by length, by chunked framing, or when the server closes."""
    if status in NO_BODY_STATUSES:
        return Length(0)
    transfer = headers.get("transfer-encoding")
    if transfer is not None:
        if transfer.replace(" ", "").lower().split(",")[-1] != "chunked":
            raise BrokenResponse(f"unsupported Transfer-Encoding {transfer!r}")
        return Chunked()
    lengths = headers.getall("content-length", [])
    if lengths:
        if len(set(lengths)) != 1 or not (lengths[0].isascii() and lengths[0].isdigit()):  # int() takes any digits
            raise BrokenResponse(f"a malformed Content-Length {lengths!r}")
        return Length(int(lengths[0]))
    return UntilClose()


class Length:
    """A body of Content-Length bytes."""

    __slots__ = ("left", "extra")
    until_close = False

    def __init__(self, length: int) -> None:
        self.left = length
        self.extra = False

    @property
    def complete(self) -> bool:
        return self.left == 0

    def feed(self, data: bytes) -> tuple[bytes, ...]:
        if len(data) <= self.left:
            self.left -= len(data)
            return (data,)
        self.extra = True
        data, self.left = data[:self.left], 0
        return (data,)


class UntilClose:
    """A body without a length: everything until the server closes (HTTP/1.0 style)."""

    __slots__ = ()
    until_close = True
    complete = False
    extra = False

    def feed(self, data: bytes) -> tuple[bytes, ...]:
        return (data,)


class Chunked:
    """Transfer-Encoding: chunked, undone: size line, data, CRLF ... a zero size, trailers, CRLF.

    A stream arrives as one chunk per event, dozens per read: whole chunks are cut in one tight
    step each; only a chunk split across reads goes through the states."""

    __slots__ = ("_buffer", "_left", "_state", "complete", "extra")
    until_close = False

    def __init__(self) -> None:
        self._buffer = b""
        self._left = 0  # data bytes left in the current chunk
        self._state = _SIZE
        self.complete = False
        self.extra = False

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        if self._buffer:
            data, self._buffer = self._buffer + data, b""
        position, end = 0, len(data)
        while position < end:
            state = self._state
            if state == _SIZE:
                line_end = data.find(b"\r\n", position)
                if line_end < 0:
                    self._keep(data, position)
                    break
                size = chunk_size(data[position:line_end])
                start = line_end + 2
                stop = start + size
                if not size:
                    self._state, position = _TRAILERS, start
                elif stop + 2 <= end:  # the whole chunk is here: the usual case
                    if data[stop:stop + 2] != b"\r\n":
                        raise BrokenResponse("a chunk is longer than its size")
                    out.append(data[start:stop])
                    position = stop + 2
                else:
                    self._state, self._left, position = _DATA, size, start
            elif state == _DATA:
                take = min(self._left, end - position)
                out.append(data[position:position + take])
                position += take
                self._left -= take
                if not self._left:
                    self._state = _DATA_END
            elif self.complete:
                self.extra = True
                break
            else:  # _DATA_END or _TRAILERS: a line
                line_end = data.find(b"\r\n", position)
                if line_end < 0:
                    self._keep(data, position)
                    break
                line = data[position:line_end]
                position = line_end + 2
                if state == _DATA_END:
                    if line:
                        raise BrokenResponse("a chunk is longer than its size")
                    self._state = _SIZE
                elif not line:  # the blank line after the trailers
                    self.complete = True
        return out

    def _keep(self, data: bytes, position: int) -> None:
        """An unfinished line waits for the next read."""
        self._buffer = data[position:]
        if len(self._buffer) > MAX_CHUNK_LINE:
            raise BrokenResponse("a chunk size or trailer line is too long")


_SIZE, _DATA, _DATA_END, _TRAILERS = range(4)


def chunk_size(line: bytes) -> int:
    """The size of a chunk size line (`1a` or `1a;name=value`), strictly hexadecimal."""
    text = line.split(b";", 1)[0].rstrip(b" \t") if b";" in line else line
    if not text or text[0] not in _HEX_DIGITS or b"_" in text or len(text) > 16:
        raise BrokenResponse(f"a malformed chunk size {line[:40]!r}")
    try:
        return int(text, 16)
    except ValueError:
        raise BrokenResponse(f"a malformed chunk size {line[:40]!r}") from None


_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
