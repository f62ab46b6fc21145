"""The floor for any aiohttp proxy: no auth, no metering, chunks streamed straight through.

One pooled ClientSession, the request body read whole and posted upstream with the upstream
key in place of the client's, the response headers minus framing, and every upstream chunk
written to the client as it arrives. It runs on uvloop with Antex's garbage-collector settings,
like `antex serve`.

    python -m bench.bare_proxy --upstream http://127.0.0.1:PORT --port 0
"""
from __future__ import annotations

import argparse
import asyncio
import gc

import aiohttp
from aiohttp import web

from bench.processes import serve_until_stopped

UPSTREAM = web.AppKey("upstream", str)
UPSTREAM_KEY = web.AppKey("upstream_key", str)
CLIENT = web.AppKey("client", aiohttp.ClientSession)
DROP_REQUEST = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive", "x-api-key"})
DROP_RESPONSE = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"})


async def client_session(app: web.Application):
    app[CLIENT] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                        timeout=aiohttp.ClientTimeout(total=None, sock_read=600))
    yield
    await app[CLIENT].close()


async def forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {name: value for name, value in request.headers.items() if name.lower() not in DROP_REQUEST}
    headers["x-api-key"] = request.app[UPSTREAM_KEY]
    url = request.app[UPSTREAM] + request.path_qs
    async with request.app[CLIENT].post(url, data=body, headers=headers) as upstream:
        reply_headers = {name: value for name, value in upstream.headers.items() if name.lower() not in DROP_RESPONSE}
        response = web.StreamResponse(status=upstream.status, headers=reply_headers)
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


def make_app(upstream: str, upstream_key: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app[UPSTREAM_KEY] = upstream_key
    app.cleanup_ctx.append(client_session)
    app.on_startup.append(tune_gc)
    app.router.add_post("/{tail:.*}", forward)
    return app


async def tune_gc(app: web.Application) -> None:
    """The collector settings `antex serve` runs with (antex/server.py), so that the comparison
    measures Antex's own work, not a runtime setting only one side has."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, *gc.get_threshold()[1:])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="sk-ant-upstream-test-key", help="the key sent upstream")
    args = parser.parse_args()
    try:
        import uvloop
        run = uvloop.run
    except ImportError:
        run = asyncio.run
    run(serve(args.upstream, args.api_key, args.host, args.port))


async def serve(upstream: str, upstream_key: str, host: str, port: int) -> None:
    """Run until SIGINT or SIGTERM; prints the URL once listening, like the fake upstream."""
    await serve_until_stopped(make_app(upstream, upstream_key), host, port)


if __name__ == "__main__":
    main()
