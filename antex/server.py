"""Run the app in this process: listen, and stop gracefully on SIGINT or SIGTERM.

On a stop signal the server stops accepting, running streams get `shutdown_grace_s` to finish,
then every cleanup_ctx runs in reverse: the ledger flushes every settled charge before exit.
"""
from __future__ import annotations

import gc
import os
import logging

from aiohttp import web

from antex import store
from antex.app import make_app
from antex.config import Config

log = logging.getLogger("antex")

# Young objects are collected after this many allocations instead of Python's 700. Nearly every
# object a request makes dies with it (reference counting frees it); under load the default
# threshold collects every request or so and traverses the objects of every request still in
# flight, again and again, promoting them to older generations that cost more to collect.
GC_YOUNG_THRESHOLD = 20_000


def serve(config: Config, upstream_keys: dict[str, str], *, host: str, port: int) -> None:
    try:
        import uvloop  # optional extra: antex[fast]
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    app = server_app(config, upstream_keys)
    upstreams = ", ".join(f"{entry.name} ({entry.base_url})" for entry in config.upstreams)
    log.info("Antex serving %s on http://%s:%d (database %s)", upstreams, host, port,
             store.display(config.server.database))
    web.run_app(app, host=host, port=port, shutdown_timeout=config.server.shutdown_grace_s, access_log=None,
                print=lambda line: log.info(line.strip()), loop=loop_factory() if loop_factory else None,
                handle_signals=True)


def server_app(config: Config, upstream_keys: dict[str, str]) -> web.Application:
    """The app as `antex serve` runs it: tuned for a long-lived process of its own."""
    app = make_app(config, upstream_key=upstream_keys, environ=os.environ)
    app.on_startup.append(tune_gc)  # after every cleanup_ctx has started: the keys and the ledger are loaded
    return app


async def tune_gc(app: web.Application) -> None:
    """Leave what startup built (modules, config, keys, loaded windows) out of every later
    collection, and collect young objects less often (see GC_YOUNG_THRESHOLD). Measured with
    128 requests in flight: 9 % fewer CPU instructions per request (valgrind)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
