"""The bench's own client, run in its own process: per-request timings and held-open streams.

    python -m bench.probe latency --url URL --keys K1,K2 --requests 2000 [--stream] [--stamped] [--get]
    python -m bench.probe latency --urls URL1,URL2 --keys K1,K2 --expect 200,429 --requests 2000
    python -m bench.probe hold --url URL --keys K --streams 1000

`latency` sends requests one after another (or `--concurrency` at a time) and reports, per key
(with `--urls`, per URL and its key, taken in turns so that the machine's moods hit each alike),
the first request's latency, then p50/p99 of total latency and time to first byte, the gateway's
own `x-antex-overhead-ms`, and, with `--stamped` (bench.paced_upstream), how long each event took
from the upstream's write to this client's read. `hold` opens `--streams` streams at once, prints
`OPEN` when all are open, and reads them to the end. Both print one JSON line, prefixed `PROBE `.
"""
from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time

import aiohttp
import orjson

STAMP = re.compile(rb'"text_delta","text":"(\d+)"')


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def summary(values: list[float]) -> dict:
    return {"n": len(values), "p50": percentile(values, 0.50), "p99": percentile(values, 0.99),
            "max": max(values) if values else None, "mean": sum(values) / len(values) if values else None}


def headers_for(key: str) -> dict:
    return {"content-type": "application/json", "x-api-key": key, "anthropic-version": "2023-06-01",
            "user-agent": "antex-bench/probe"}


class Timings:
    """What one key's requests measured, in milliseconds."""

    def __init__(self) -> None:
        self.first_ms: float | None = None
        self.total_ms: list[float] = []
        self.ttfb_ms: list[float] = []
        self.overhead_ms: list[float] = []
        self.stamped: list[tuple[int, int]] = []  # (upstream wrote, client read) in CLOCK_MONOTONIC ns
        self.errors: dict[str, int] = {}

    def to_json(self) -> dict:
        transit_ms = [(arrived - sent) / 1e6 for sent, arrived in self.stamped]
        return {"first_ms": self.first_ms, "total_ms": summary(self.total_ms), "ttfb_ms": summary(self.ttfb_ms),
                "overhead_ms": summary(self.overhead_ms), "transit_ms": summary(transit_ms),
                "stamped": self.stamped, "errors": self.errors}


async def one_request(session: aiohttp.ClientSession, url: str, key: str, body: bytes, stamped: bool,
                      timings: Timings, record: bool, conversation: str | None = None, expect: int = 200) -> None:
    started = time.perf_counter()
    ttfb = None
    events: list[tuple[int, int]] = []
    buffer = b""
    headers = headers_for(key)
    if conversation is not None:  # a conversation of its own: the pool chooses afresh, unbound
        headers["x-claude-code-session-id"] = conversation
    sent = session.post(url, data=body, headers=headers) if body else session.get(url, headers=headers)
    async with sent as response:
        async for chunk in response.content.iter_any():
            arrived_ns = time.monotonic_ns()
            if ttfb is None:
                ttfb = time.perf_counter() - started
            if stamped:
                buffer += chunk
                frames = buffer.split(b"\n\n")
                buffer = frames.pop()
                for frame in frames:
                    found = STAMP.search(frame)
                    if found:
                        events.append((int(found.group(1)), arrived_ns))
        status = response.status
        overhead = response.headers.get("x-antex-overhead-ms")
    total = time.perf_counter() - started
    if status != expect:
        timings.errors[str(status)] = timings.errors.get(str(status), 0) + 1
        return
    if timings.first_ms is None:
        timings.first_ms = total * 1000
    if not record:
        return
    timings.total_ms.append(total * 1000)
    timings.ttfb_ms.append((ttfb or total) * 1000)
    if overhead is not None:
        timings.overhead_ms.append(float(overhead))
    timings.stamped.extend(events)


async def latency(args: argparse.Namespace) -> dict:
    keys = args.keys.split(",")
    urls = args.urls.split(",") if args.urls else [args.url] * len(keys)
    expect = [int(status) for status in args.expect.split(",")] if args.expect else [200] * len(keys)
    if not len(urls) == len(keys) == len(expect):
        raise SystemExit("--urls, --keys and --expect need one entry per target")
    body = b"" if args.get else orjson.dumps({"model": "claude-sonnet-4-6", "max_tokens": 64, "stream": args.stream,
                                                 "messages": [{"role": "user", "content": "Say hello."}]})
    timings = [Timings() for _ in keys]
    plan = [(i, i % len(keys)) for i in range(len(keys) * (args.warmup + args.requests))]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def worker() -> None:
            while plan:
                index, target = plan.pop(0)
                await one_request(session, urls[target], keys[target], body, args.stamped, timings[target],
                                  record=index >= len(keys) * args.warmup,
                                  conversation=f"bench-{index}" if args.new_conversations else None,
                                  expect=expect[target])

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return {"keys": [timing.to_json() for timing in timings]}


async def hold(args: argparse.Namespace) -> dict:
    """Open `streams` streams (ramped, so no accept queue overflows), then read them all out."""
    body = orjson.dumps({"model": "claude-sonnet-4-6", "max_tokens": 64, "stream": True,
                         "messages": [{"role": "user", "content": "Say hello."}]})
    key = args.keys.split(",")[0]
    state = {"open": 0, "peak_open": 0, "done": 0, "errors": 0}
    all_open = asyncio.Event()

    async def stream(session: aiohttp.ClientSession) -> None:
        try:
            async with session.post(args.url, data=body, headers=headers_for(key)) as response:
                if response.status != 200:
                    state["errors"] += 1
                    return
                state["open"] += 1
                state["peak_open"] = max(state["peak_open"], state["open"])
                if state["open"] == args.streams:
                    all_open.set()
                async for _ in response.content.iter_any():
                    pass
                state["open"] -= 1
                state["done"] += 1
        except aiohttp.ClientError:
            state["errors"] += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=600)) as session:
        tasks = []
        for i in range(args.streams):
            tasks.append(asyncio.create_task(stream(session)))
            if i % 50 == 49:
                await asyncio.sleep(0.02)
        waiter = asyncio.create_task(all_open.wait())
        await asyncio.wait([waiter, asyncio.gather(*tasks)], return_when=asyncio.FIRST_COMPLETED)
        print("OPEN", state["open"], flush=True)
        await asyncio.gather(*tasks)
        waiter.cancel()
    return state


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.probe", description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("latency", "hold"))
    parser.add_argument("--url")
    parser.add_argument("--urls", help="comma-separated, one per key: latency takes the targets in turns")
    parser.add_argument("--keys", required=True, help="comma-separated; latency alternates between them")
    parser.add_argument("--expect", help="comma-separated, one per key: the status each target's requests should get "
                                         "(default 200); others count as errors")
    parser.add_argument("--requests", type=int, default=1000, help="measured requests per key")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured requests per key first")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--get", action="store_true", help="GET the URL (e.g. /v1/usage) instead of POSTing a message")
    parser.add_argument("--stamped", action="store_true", help="read upstream stamps (bench.paced_upstream)")
    parser.add_argument("--new-conversations", action="store_true",
                        help="each request a conversation of its own (X-Claude-Code-Session-Id), bound nowhere yet")
    parser.add_argument("--streams", type=int, default=1000)
    args = parser.parse_args()
    if not (args.url or args.urls):
        parser.error("--url or --urls is required")
    run = latency if args.mode == "latency" else hold
    result = asyncio.run(run(args))
    sys.stdout.write("PROBE " + orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
