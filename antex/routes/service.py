"""Unauthenticated housekeeping: liveness, and cheap answers to what Claude Code sends besides the API."""
from __future__ import annotations

import orjson
from aiohttp import web

from antex.appkeys import CLOCK, CLUSTER, LEDGER, POOL
from antex.routes import expect

HEALTHY = b'{"status":"ok"}'


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz, expect_handler=expect)
    # Claude Code preconnects with HEAD /api/hello on its base URL, often, in bursts.
    app.router.add_get("/api/hello", hello, expect_handler=expect)
    # Claude Code posts telemetry batches to its base URL; accept and drop them, never an error storm.
    app.router.add_post("/api/event_logging/batch", discard, expect_handler=expect)


async def healthz(request: web.Request) -> web.Response:
    """Liveness and each upstream's state (ok, cooling until when for which model families, or
    down); 503 when the ledger cannot write (the store or the journal fails), with how many charges
    wait to be written, so a load balancer or a monitor sees it. With PostgreSQL, a feed from the
    other instances that is down is "degraded" with a 200: every instance would say the same, and
    a load balancer must not take them all out."""
    upstreams = request.app[POOL].states(request.app[CLOCK]())
    ledger = request.app[LEDGER].health()
    cluster = request.app.get(CLUSTER)
    apart = cluster.health() if cluster is not None else None
    healthy = ledger is None and apart is None and all(upstream["state"] == "ok" for upstream in upstreams)
    body = {"status": "ok" if healthy else "degraded", "upstreams": upstreams}
    if ledger is not None:
        body["ledger"] = ledger
    if apart is not None:  # serving from memory; limits hold per instance until the feed is back
        body["instances"] = apart
    return web.Response(body=orjson.dumps(body), status=200 if ledger is None else 503, content_type="application/json")


async def hello(request: web.Request) -> web.Response:
    return web.Response(body=HEALTHY, content_type="application/json")


async def discard(request: web.Request) -> web.Response:
    return web.Response(body=b"{}", content_type="application/json")
