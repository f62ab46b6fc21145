"""In-process bench variants that read what no production endpoint exposes: Ledger.unwritten.

    python -m bench.ledger_watch serve --config CFG --samples OUT.json
        The gateway exactly as `antex serve` runs it, plus a task that samples the ledger's
        unwritten charges every 2 ms; the samples' summary is written to OUT.json on SIGTERM.
    python -m bench.ledger_watch capacity --database PATH --events 200000
        The writer alone: hands it charges as fast as the event loop can and times the commits.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

import orjson
from aiohttp import web

from antex import store
from antex.app import make_app
from antex.appkeys import LEDGER
from antex.config import load
from antex.credits import Usage
from antex.journal import Journal
from antex.ledger import Charge, Ledger
from bench.probe import percentile

SAMPLE_S = 0.002


def sampler(out: Path):
    async def watch(app: web.Application):
        samples: list[int] = []

        async def run() -> None:
            ledger = app[LEDGER]
            while True:
                samples.append(ledger.unwritten)
                await asyncio.sleep(SAMPLE_S)

        task = asyncio.create_task(run())
        yield
        task.cancel()
        busy = [s for s in samples if s] or [0]
        out.write_text(orjson.dumps({"samples": len(samples), "max": max(samples or [0]),
                                     "p99": percentile(samples, 0.99), "p99_nonzero": percentile(busy, 0.99),
                                     "nonzero_share": sum(1 for s in samples if s) / max(1, len(samples))}).decode())

    return watch


def serve(args: argparse.Namespace) -> None:
    import uvloop

    config = load(args.config)
    app = make_app(config, upstream_key=os.environ[config.upstream.api_key_env])
    app.cleanup_ctx.append(sampler(Path(args.samples)))
    web.run_app(app, host=config.server.host, port=config.server.port, access_log=None, print=None,
                loop=uvloop.new_event_loop(), shutdown_timeout=2)


async def capacity(args: argparse.Namespace) -> dict:
    reader = await store.connect(args.database)
    writer = await store.SqliteWriter.open(args.database)
    ledger = Ledger(store.SqliteStore(reader), writer, Journal(args.database), time.time)
    ledger.start()
    state = await ledger.state(args.key_id)
    usage = Usage(25, 12)
    peak = 0
    started = time.perf_counter()
    for i in range(args.events):
        ledger.charge(state, Charge(args.key_id, time.time(), "claude-sonnet-4-6", "/v1/messages", usage, 25500,
                                    f"req_{i}", "complete"))
        if i % 100 == 99:
            peak = max(peak, ledger.unwritten)
            await asyncio.sleep(0)
    handed_s = time.perf_counter() - started
    await ledger.flush()
    elapsed_s = time.perf_counter() - started
    await ledger.close()
    await writer.close()
    await reader.close()
    return {"events": args.events, "handed_s": handed_s, "elapsed_s": elapsed_s, "peak_unwritten": peak}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger_watch", description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("serve", "capacity"))
    parser.add_argument("--config")
    parser.add_argument("--samples")
    parser.add_argument("--database")
    parser.add_argument("--key-id", type=int, default=1)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args)
    else:
        import uvloop

        print("CAPACITY " + orjson.dumps(uvloop.run(capacity(args))).decode(), flush=True)


if __name__ == "__main__":
    main()
