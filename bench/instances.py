"""`make bench` rows for several processes on one PostgreSQL database (section "instances").

- one Antex on PostgreSQL vs one on SQLite, same load (throughput target ≥ 0.8×): the hot path
  does not touch the database either way, so what differs is the writer and the feed;
- how long a charge made on one instance takes to show in another's /v1/usage (p99 ≤ 100 ms):
  a request on A, then B's /v1/usage polled every millisecond until it moves;
- two instances vs one, the same total connections split between them (both on the proxy CPU,
  so this shows what sharing the store costs, not what a second machine would add).

The PostgreSQL server is the tests' own (tests/postgres.py: Debian's binaries, a temp directory).
The same key works on every instance: made with the CLI on SQLite, then `antex import`ed.
"""
from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import orjson

from bench import antex_instance, wrk
from bench.processes import LOAD_CPUS, PROXY_CPUS, Process, python
from bench.report import Row, fmt, times
from tests.postgres import remove_server, start_server

if TYPE_CHECKING:
    from bench.run import Bench

BODY = {"model": "claude-sonnet-4-6", "max_tokens": 64, "messages": [{"role": "user", "content": "Say hello."}]}
PROPAGATION_SAMPLES = 200


def run(bench: "Bench") -> None:
    s = bench.settings
    server = start_server()
    try:
        database = server.new_database()
        url = server.url(database)
        fake, fake_url = bench.start("fake-instances", python("-m", "tests.fake_anthropic", "--port", "0", "--events",
                                                              str(s.events)), LOAD_CPUS)
        sqlite_config, sqlite_port = antex_instance.write_config(bench.work_dir, "single", fake_url)
        _, key = antex_instance.create_key(sqlite_config, "bench")
        configs = [_pg_config(bench.work_dir, f"shared-{n}", url, fake_url) for n in (1, 2)]
        antex_instance.antex(configs[0][0], "import", str(bench.work_dir / "single.db"))
        # A key whose every charge moves its 5-hour percentage visibly (~0.24 % a request)
        _, probe_key = antex_instance.create_key(configs[0][0], "transit")
        antex_instance.antex(configs[0][0], "keys", "set", "transit", "--credits-5h", "10")
        single, single_url = _start(bench, sqlite_config, sqlite_port, "antex-sqlite")
        first, first_url = _start(bench, *configs[0], "antex-pg-1")
        rows = []
        sqlite_run, pg_run = bench.compare("one instance, SQLite vs PostgreSQL, c32",
                                           [(single, single_url + "/v1/messages", BODY),
                                            (first, first_url + "/v1/messages", BODY)], fake, key, 32)
        ratio = pg_run.rps / sqlite_run.rps
        rows.append(Row("one instance: throughput, PostgreSQL vs SQLite (32 connections)", fmt(sqlite_run.rps, " req/s", 0),
                        fmt(pg_run.rps, " req/s", 0), times(ratio), "≥ 0.80×", ratio >= 0.8))
        single.stop()
        second, second_url = _start(bench, *configs[1], "antex-pg-2")
        delays = asyncio.run(_propagation(first_url, second_url, probe_key))
        p50, p99 = _percentile(delays, 0.5), _percentile(delays, 0.99)
        rows.append(Row("a charge on one instance seen by another: p50 / p99", "",
                        f"{fmt(p50, '', 1)} / {fmt(p99, ' ms', 1)}", "", "p99 ≤ 100 ms", p99 <= 100.0))
        seconds = max(1, round(s.seconds / 2))
        one = _load([first_url], key, 64, seconds, bench.work_dir)
        two = _load([first_url, second_url], key, 64, seconds, bench.work_dir)
        rows.append(Row("two instances vs one: throughput (64 connections in all, both on the proxy CPU)",
                        fmt(one, " req/s", 0), fmt(two, " req/s", 0), times(two / one), "", None))
        bench.sections.append(("Several instances on one PostgreSQL database (SQLite / one instance | PostgreSQL / two)",
                               rows))
        bench.notes.append(f"Instances: a charge's transit measured over {len(delays)} requests on one instance, each "
                           f"followed by another's GET /v1/usage every millisecond until it moved; it includes the "
                           f"ledger's commit interval (up to 50 ms). PostgreSQL ran unpinned (fsync off, as in the tests).")
        bench.stop_all()
    finally:
        remove_server(server)


def _pg_config(work_dir: Path, name: str, url: str, fake_url: str) -> tuple[Path, int]:
    config, port = antex_instance.write_config(work_dir, name, fake_url)
    text = config.read_text().replace(f'database = "{work_dir / (name + ".db")}"',
                                      f'database = "{url}"\ninstance_id = "{name}"\njournal_dir = "{work_dir}"')
    config.write_text(text)
    return config, port


def _start(bench: "Bench", config: Path, port: int, name: str) -> tuple[Process, str]:
    process, url = antex_instance.start(config, port, bench.logs, name)
    bench.started.append(process)
    return process, url


async def _propagation(a_url: str, b_url: str, key: str) -> list[float]:
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    delays = []
    async with aiohttp.ClientSession() as http:
        async def used() -> float:
            async with http.get(b_url + "/v1/usage", headers=headers) as resp:
                return (await resp.json())["five_hour"]["used_percent"]

        for _ in range(PROPAGATION_SAMPLES):
            before = await used()
            async with http.post(a_url + "/v1/messages", data=orjson.dumps(BODY),
                                 headers=headers | {"content-type": "application/json"}) as resp:
                await resp.read()
            sent = time.perf_counter()
            while await used() == before:
                await asyncio.sleep(0.001)
                if time.perf_counter() - sent > 5:
                    raise RuntimeError("a charge did not reach the other instance within 5 s")
            delays.append((time.perf_counter() - sent) * 1000)
    return delays


def _load(urls: list[str], key: str, connections: int, seconds: float, work_dir: Path) -> float:
    """Requests per second of wrk runs against every URL at once, `connections` split between them."""
    results: list[wrk.Load] = []

    def one(index: int, url: str) -> None:
        own_dir = work_dir / f"wrk-{index}"
        own_dir.mkdir(exist_ok=True)
        results.append(wrk.run(url + "/v1/messages", orjson.dumps(BODY), key, connections=connections // len(urls),
                               seconds=seconds, work_dir=own_dir))

    threads = [threading.Thread(target=one, args=(i, url)) for i, url in enumerate(urls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wrk.settle()
    return sum(load.rps for load in results)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
