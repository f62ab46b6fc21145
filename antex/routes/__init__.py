"""One module per front door; each exposes setup(app) that adds its routes, every one of them with
`expect_handler=expect` (and routes/fallback.py, added last, takes whatever no route matched)."""
from __future__ import annotations

from aiohttp import web


async def expect(request: web.Request) -> None:
    """Answer nothing yet: `Expect: 100-continue` gets its 100 only once the request is admitted,
    when its body is about to be read (request_body.send_continue), so a refused client never
    uploads. Any other expectation is ignored, as RFC 9110 allows: aiohttp's own handler would
    send the 100 before authentication, and refuse others with a plain-text 417 (a 500 when the
    value is not UTF-8) before the error middleware."""
