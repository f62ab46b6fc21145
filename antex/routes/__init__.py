"""One module per front door; each exposes setup(app) that adds its routes, every one of them with
`expect_handler=expect` (and routes/fallback.py, added last, takes whatever no route matched)."""
from __future__ import annotations

from aiohttp import HttpVersion11, web


async def expect(request: web.Request) -> None:
    """Answer `Expect: 100-continue` with a 100 (curl sends its body once it sees it), and ignore any
    other expectation, as RFC 9110 allows: aiohttp's own handler would refuse it before the error
    middleware with a plain-text 417, or a 500 when the value is not UTF-8."""
    if request.version == HttpVersion11 and request.headers.get("expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim answer is not part of the response's size
