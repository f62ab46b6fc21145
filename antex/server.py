"""Run the app in this process: listen, and stop gracefully on SIGINT or SIGTERM.

On a stop signal the server stops accepting, running streams get `shutdown_grace_s` to finish,
then every cleanup_ctx runs in reverse: the ledger flushes every settled charge before exit.
"""
from __future__ import annotations

import logging

from aiohttp import web

from antex.app import make_app
from antex.config import Config

log = logging.getLogger("antex")


def serve(config: Config, upstream_key: str, *, host: str, port: int) -> None:
    try:
        import uvloop  # optional extra: antex[fast]
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    app = make_app(config, upstream_key=upstream_key)
    log.info("Antex serving %s on http://%s:%d (database %s)", config.upstream.base_url, host, port, config.server.database)
    web.run_app(app, host=host, port=port, shutdown_timeout=config.server.shutdown_grace_s, access_log=None,
                print=lambda line: log.info(line.strip()), loop=loop_factory() if loop_factory else None,
                handle_signals=True)
