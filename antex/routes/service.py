"""Unauthenticated housekeeping: liveness, and cheap answers to what Claude Code sends besides the API."""
from __future__ import annotations

from aiohttp import web

from antex.routes import expect

HEALTHY = b'{"status":"ok"}'


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz, expect_handler=expect)
    # Claude Code preconnects with HEAD /api/hello on its base URL, often, in bursts.
    app.router.add_get("/api/hello", healthz, expect_handler=expect)
    # Claude Code posts telemetry batches to its base URL; accept and drop them, never an error storm.
    app.router.add_post("/api/event_logging/batch", discard, expect_handler=expect)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=HEALTHY, content_type="application/json")


async def discard(request: web.Request) -> web.Response:
    return web.Response(body=b"{}", content_type="application/json")
