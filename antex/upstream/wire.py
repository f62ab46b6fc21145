"""HTTP/1.1 on the wire, as pure functions: the request head Antex writes, the codings it undoes
(bounded), what a `Keep-Alive` header allows, and the errors. Answers are parsed by llhttp
(httptools) in antex/upstream/client.py, not here.
"""
from __future__ import annotations

import zlib
from typing import Iterable

MAX_DECODED_BYTES = 64 * 1024 * 1024  # a compressed answer never inflates past this (a zip bomb stops here)


class UpstreamError(Exception):
    """The upstream could not be reached, or broke the protocol or the connection."""


class BrokenResponse(UpstreamError):
    """The answer was cut off or is not valid HTTP/1.1."""


class ConnectFailed(UpstreamError):
    """No connection: refused, unreachable, the name does not resolve, or the proxy refused."""


class TLSFailed(ConnectFailed):
    """The TLS handshake failed (e.g. a plain-HTTP server, a bad certificate)."""


class StaleConnection(BrokenResponse):
    """A reused idle connection was closed by the server before any byte of the answer: the
    request never reached it, so it is sent once more on a new connection."""


def request_head(target: str, host: str, headers: Iterable[tuple[str, str]], length: int) -> bytes:
    """A POST's head: the request line, Host, Content-Length, then `headers` as given."""
    lines = [f"POST {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in headers]
    text = "\r\n".join(lines)
    breaks = len(lines) - 1
    if text.count("\n") != breaks or text.count("\r") != breaks:  # a value must never split the head
        raise UpstreamError("a request header holds a line break")
    return (text + "\r\n\r\n").encode("utf-8", "surrogateescape")


class Decoder:
    """Undoes a gzip or deflate Content-Encoding, at most MAX_DECODED_BYTES in all."""

    __slots__ = ("_zlib", "_left")

    def __init__(self, wbits: int) -> None:
        self._zlib = zlib.decompressobj(wbits)
        self._left = MAX_DECODED_BYTES

    def decompress(self, data: bytes) -> bytes:
        try:
            out = self._zlib.decompress(data, self._left + 1)
        except zlib.error as exc:
            raise BrokenResponse(f"the body does not decode: {exc}") from None
        self._left -= len(out)
        if self._left < 0 or self._zlib.unconsumed_tail:
            raise BrokenResponse(f"the body inflates past {MAX_DECODED_BYTES} bytes")
        return out

    def finish(self) -> bytes:
        """The end of the body; BrokenResponse when it is corrupt or cut short."""
        try:
            tail = self._zlib.flush()
        except zlib.error as exc:
            raise BrokenResponse(f"the body does not decode: {exc}") from None
        if not self._zlib.eof:
            raise BrokenResponse("the compressed body is cut short")
        return tail


def decoder_for(content_encoding: str | None) -> Decoder | None:
    """A decompressor for the answer's Content-Encoding (None for none); BrokenResponse for one
    Antex never asks for."""
    if not content_encoding:
        return None
    encoding = content_encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return Decoder(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return Decoder(32 + zlib.MAX_WBITS)  # zlib-wrapped, as the RFC says (auto-detected)
    if encoding == "identity":
        return None
    raise BrokenResponse(f"unsupported Content-Encoding {content_encoding!r}")


def keep_alive_s(header: str | None, default_s: float) -> float:
    """How long an idle connection may be reused: `default_s`, or less when the server's
    `Keep-Alive: timeout=5, max=100` says it closes sooner (a second early, to beat its close)."""
    if not header:
        return default_s
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "timeout":
            try:
                return max(min(default_s, float(value.strip()) - 1.0), 0.0)
            except ValueError:
                return default_s
    return default_s
