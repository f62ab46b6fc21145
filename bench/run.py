"""`make bench`: the bare pass-through and Antex under the same load, in one run, one table.

Every process is started here: the fake upstream (tests/fake_anthropic.py), the paced upstream
(bench/paced_upstream.py), the bare pass-through (bench/bare_proxy.py) and Antex itself
(`python antex.py serve`, temp config and database, keys from the CLI). The proxy under test runs
alone on CPU 0; the upstreams and the load generators (wrk, bench/probe.py) share CPU 1.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from statistics import median
from pathlib import Path

import orjson

from bench import antex_instance, stall_watch, wrk
from bench.processes import CLOCK_TICKS, LOAD_CPUS, PROXY_CPUS, Process, busy_jiffies, python
from bench.report import Row, delta_ms, fmt, markdown, ratio, table, times

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
MESSAGES_BODY = {"model": "claude-sonnet-4-6", "max_tokens": 64, "messages": [{"role": "user", "content": "Say hello."}]}
CHAT_BODY = {"model": "claude-sonnet-4-6", "max_tokens": 64, "stream": True,
             "messages": [{"role": "user", "content": "Say hello."}]}
# A Claude Code-sized request: most of the time spent on it is reading, checking and parsing the body.
LARGE_BODY = {"model": "claude-sonnet-4-6", "max_tokens": 64, "messages": [
    {"role": "user" if turn % 2 == 0 else "assistant", "content": f"Turn {turn}: " + "lorem ipsum dolor sit amet " * 90}
    for turn in range(40)]}
RESPONSES_BODY = {"model": "claude-sonnet-4-6", "max_output_tokens": 64, "stream": True, "input": "Say hello."}


@dataclass(frozen=True)
class Settings:
    seconds: float = 18  # measured wrk time per proxy and scenario, in `rounds` interleaved slices (whole seconds each)
    rounds: int = 6
    warmup_s: float = 3
    latency_requests: int = 2000  # one-at-a-time non-streaming requests, per proxy
    stamped_requests: int = 200  # one-at-a-time paced streams, per proxy
    paced_delay_s: float = 0.002  # between events of a timing stream
    open_streams: int = 1000
    hold_delay_s: float = 0.25  # between events of a held stream: 40 events = 10 s open
    seed_events: int = 1_000_000
    admission_requests: int = 1500  # per key
    capacity_events: int = 200_000
    events: int = 40

    def describe(self) -> str:
        return (f"{self.seconds:g} s of wrk per proxy and scenario in {self.rounds} interleaved rounds, after "
                f"{self.warmup_s:g} s warm-up; {self.events} SSE events per stream; "
                f"{self.latency_requests} one-at-a-time requests; {self.stamped_requests} paced streams "
                f"({self.paced_delay_s * 1000:g} ms apart); {self.open_streams} held streams; "
                f"{self.seed_events:,} seeded events")


QUICK = Settings(seconds=4, rounds=2, warmup_s=1, latency_requests=500, stamped_requests=50, open_streams=1000,
                 hold_delay_s=0.1, seed_events=1_000_000, admission_requests=300, capacity_events=50_000)


@dataclass
class Measured:
    """One proxy's wrk rounds in a comparison, added up."""

    name: str
    requests: int = 0
    seconds: float = 0.0
    errors: int = 0
    proxy_cpu_s: float = 0.0
    upstream_cpu_s: float = 0.0
    wrk_cpu_s: float = 0.0
    other_cpu_s: float = 0.0
    wall_s: float = 0.0

    def __post_init__(self) -> None:
        self.p50s: list[float] = []
        self.p99s: list[float] = []
        self.round_rps: list[float] = []
        self.round_cpu_us: list[float] = []

    def add(self, load: wrk.Load, proxy_s: float, upstream_s: float, other_s: float, wall_s: float) -> None:
        self.requests += load.requests
        self.seconds += load.seconds
        self.errors += load.errors
        self.p50s.append(load.p50_ms)
        self.p99s.append(load.p99_ms)
        self.round_rps.append(load.rps)
        self.round_cpu_us.append(1e6 * proxy_s / max(1, load.requests))
        self.proxy_cpu_s += proxy_s
        self.upstream_cpu_s += upstream_s
        self.wrk_cpu_s += load.cpu_s
        self.other_cpu_s += other_s
        self.wall_s += wall_s

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def vs(self, bare: "Measured") -> tuple[float, float]:
        """(throughput ratio, CPU-per-request ratio) to `bare`: the median over rounds of each
        round's ratio. Both proxies ran back to back in a round, so a slow spell on this shared
        machine hits both; a ratio of totals would let one slow round tilt the result."""
        rps = median(mine / theirs for mine, theirs in zip(self.round_rps, bare.round_rps))
        cpu = median(theirs / mine for mine, theirs in zip(self.round_cpu_us, bare.round_cpu_us))
        return rps, cpu

    @property
    def p50_ms(self) -> float:
        return sorted(self.p50s)[len(self.p50s) // 2]

    @property
    def p99_ms(self) -> float:
        return sorted(self.p99s)[len(self.p99s) // 2]

    @property
    def cpu_us(self) -> float:
        """The proxy's CPU time per request: what its throughput is when it has a CPU to itself."""
        return 1e6 * self.proxy_cpu_s / max(1, self.requests)

    @property
    def proxy_share(self) -> float:
        return 100 * self.proxy_cpu_s / self.wall_s

    @property
    def upstream_share(self) -> float:
        return 100 * self.upstream_cpu_s / self.wall_s

    @property
    def wrk_share(self) -> float:
        return 100 * self.wrk_cpu_s / self.wall_s

    @property
    def other_share(self) -> float:
        return 100 * self.other_cpu_s / self.wall_s


class Bench:
    def __init__(self, settings: Settings, work_dir: Path) -> None:
        self.settings = settings
        self.work_dir = work_dir
        self.logs = work_dir / "logs"
        self.logs.mkdir()
        self.sections: list[tuple[str, list[Row]]] = []
        self.notes: list[str] = []
        self.cpu_notes: list[str] = []
        self.started: list[Process] = []

    def start(self, name: str, argv: list[str], cpus: set[int]) -> tuple[Process, str]:
        process = Process(name, argv, self.logs, cpus)
        self.started.append(process)
        return process, process.wait_for_url()

    def start_antex(self, name: str, upstream_url: str, *, argv_for=None,
                    pool: list[tuple[str, str, int]] | None = None) -> tuple[Process, str, Path, str]:
        """A configured Antex with one key; returns (process, url, config, key)."""
        config, port = antex_instance.write_config(self.work_dir, name, upstream_url, pool)
        _, key = antex_instance.create_key(config, "bench")
        process, url = antex_instance.start(config, port, self.logs, name, argv_for(config) if argv_for else None)
        self.started.append(process)
        return process, url, config, key

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()
        self.started.clear()

    def say(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    # load

    def compare(self, label: str, runs: list[tuple[Process, str, dict]], upstream: Process, key: str,
                connections: int, keys: list[str] | None = None) -> list[Measured]:
        """wrk against each (proxy, url, body), interleaved in `rounds` slices so a change in the
        machine's load hits every proxy alike; each proxy is warmed up once first. `keys`: one per
        run, when the proxies are Antex instances with keys of their own."""
        s = self.settings
        run_keys = dict(zip((url for _, url, _ in runs), keys or [key] * len(runs)))
        for proxy, url, body in runs:
            wrk.run(url, orjson.dumps(body), run_keys[url], connections=connections, seconds=s.warmup_s,
                    work_dir=self.work_dir)
            wrk.settle()
        results = [Measured(proxy.name) for proxy, _, _ in runs]
        for round_number in range(s.rounds):
            in_order = list(zip(runs, results))
            if round_number % 2:  # every other round the other way round, so going first or second favours no one
                in_order.reverse()
            for (proxy, url, body), measured in in_order:
                machine_before = busy_jiffies()
                own_before = proxy.cpu_s(), upstream.cpu_s()
                wall = time.perf_counter()
                load = wrk.run(url, orjson.dumps(body), run_keys[url], connections=connections,
                               seconds=s.seconds / s.rounds, work_dir=self.work_dir)
                wall = time.perf_counter() - wall
                proxy_s, upstream_s = proxy.cpu_s() - own_before[0], upstream.cpu_s() - own_before[1]
                other_s = (busy_jiffies() - machine_before) / CLOCK_TICKS - proxy_s - upstream_s - load.cpu_s
                measured.add(load, proxy_s, upstream_s, max(other_s, 0.0), wall)
                wrk.settle()
        for measured in results:
            self.cpu_notes.append(f"{label}, {measured.name}: {measured.rps:,.0f} req/s, {measured.cpu_us:,.0f} µs CPU/request; "
                                  f"CPU {measured.name} {measured.proxy_share:.0f}% (CPU 0), upstream "
                                  f"{measured.upstream_share:.0f}% + wrk {measured.wrk_share:.0f}% (CPU 1), "
                                  f"other processes {measured.other_share:.0f}% of one CPU")
            if measured.errors:
                self.notes.append(f"{label}, {measured.name}: wrk counted {measured.errors} errors "
                                  f"(non-2xx, timeouts or socket errors).")
        return results

    def probe(self, *args: str) -> dict:
        """bench/probe.py in its own process on the load CPU; its JSON result."""
        process = Process(f"probe-{len(self.started)}-{int(time.monotonic() * 1000)}", python("-m", "bench.probe", *args),
                          self.logs, LOAD_CPUS)
        process.popen.wait()
        text = process.log_path.read_text()
        process.stop()
        line = next((line for line in text.splitlines() if line.startswith("PROBE ")), None)
        if line is None:
            raise RuntimeError(f"probe {' '.join(args)} failed: {text[-2000:]}")
        return orjson.loads(line[6:])

    # sections

    def throughput(self) -> None:
        """Non-streaming and streaming /v1/messages, and the translated routes, against the fake."""
        s = self.settings
        fake, fake_url = self.start("fake", python("-m", "tests.fake_anthropic", "--port", "0", "--events", str(s.events)),
                                    LOAD_CPUS)
        bare, bare_url = self.start("bare", python("-m", "bench.bare_proxy", "--upstream", fake_url), PROXY_CPUS)
        antex, antex_url, config, key = self.start_antex("antex", fake_url)
        messages = "/v1/messages"

        rows = []
        for connections in (32, 256):
            b, a = self.compare(f"non-streaming c{connections}", [(bare, bare_url + messages, MESSAGES_BODY),
                                (antex, antex_url + messages, MESSAGES_BODY)], fake, key, connections)
            rows += self.load_rows(f"{connections} connections", b, a, 0.85)
        b, a = self.compare("non-streaming c32, 100 KB body", [(bare, bare_url + messages, LARGE_BODY),
                            (antex, antex_url + messages, LARGE_BODY)], fake, key, 32)
        rows += self.load_rows(f"32 connections, {len(orjson.dumps(LARGE_BODY)) // 1000} KB bodies", b, a, 0.85)
        one = [self.probe("latency", "--url", url + messages, "--keys", key, "--requests", str(s.latency_requests))["keys"][0]
               for url in (bare_url, antex_url)]
        rows += [
            Row("1 at a time: latency p50", fmt(one[0]["total_ms"]["p50"], " ms", 3), fmt(one[1]["total_ms"]["p50"], " ms", 3),
                delta_ms(one[1]["total_ms"]["p50"], one[0]["total_ms"]["p50"]), "≤ +1 ms",
                one[1]["total_ms"]["p50"] - one[0]["total_ms"]["p50"] <= 1.0),
            Row("1 at a time: latency p99", fmt(one[0]["total_ms"]["p99"], " ms", 3), fmt(one[1]["total_ms"]["p99"], " ms", 3),
                delta_ms(one[1]["total_ms"]["p99"], one[0]["total_ms"]["p99"])),
            Row("Antex's own x-antex-overhead-ms p50 / p99", "", f"{fmt(one[1]['overhead_ms']['p50'], '', 3)} / "
                f"{fmt(one[1]['overhead_ms']['p99'], ' ms', 3)}"),
        ]
        self.sections.append(("Non-streaming POST /v1/messages", rows))

        stream_body = {**MESSAGES_BODY, "stream": True}
        b, a = self.compare("streaming c32", [(bare, bare_url + messages, stream_body),
                            (antex, antex_url + messages, stream_body)], fake, key, 32)
        rows = self.load_rows(f"32 connections, {s.events} events each", b, a, 0.85)
        self.sections.append(("Streaming POST /v1/messages", rows))

        rows = []
        # /v1/responses twice: stored (OpenAI's default, each response written after it ends) and not
        for label, path, body in (("/v1/chat/completions", "/v1/chat/completions", CHAT_BODY),
                                  ("/v1/responses", "/v1/responses", RESPONSES_BODY),
                                  ("/v1/responses store:false", "/v1/responses", {**RESPONSES_BODY, "store": False})):
            status = self.status_of(antex_url + path, body, key)
            if status != 200:
                why = "route missing" if status == 404 else f"HTTP {status}"
                rows.append(Row(f"{label} streaming, 32 connections: throughput", "", f"n/a ({why})", "n/a", "≥ 0.7×", None))
                self.notes.append(f"{label}: answered HTTP {status} to a streaming request, so its translation cost "
                                  f"was not measured ({why}).")
                continue
            b, t = self.compare(f"{label} streaming c32", [(bare, bare_url + messages, stream_body),
                                (antex, antex_url + path, body)], fake, key, 32)
            rows += self.load_rows(f"{label} streaming, 32 connections", b, t, 0.7, latency=False)
        self.sections.append(("Translation (Antex's OpenAI route vs bare /v1/messages streaming)", rows))

        self.admission(antex, antex_url, config)
        self.stop_all()

    @staticmethod
    def load_rows(label: str, b: Measured, a: Measured, target: float, latency: bool = True) -> list[Row]:
        rps_ratio, cpu_ratio = a.vs(b)
        rows = [
            Row(f"{label}: throughput", fmt(b.rps, " req/s", 0), fmt(a.rps, " req/s", 0), times(rps_ratio),
                f"≥ {target:.2f}×", rps_ratio >= target),
            Row(f"{label}: proxy CPU per request (throughput on a CPU of its own)", fmt(b.cpu_us, " µs", 0),
                fmt(a.cpu_us, " µs", 0), times(cpu_ratio), f"≥ {target:.2f}×", cpu_ratio >= target),
        ]
        if latency:
            rows += [
                Row(f"{label}: latency p50", fmt(b.p50_ms, " ms"), fmt(a.p50_ms, " ms"), delta_ms(a.p50_ms, b.p50_ms)),
                Row(f"{label}: latency p99", fmt(b.p99_ms, " ms"), fmt(a.p99_ms, " ms"), delta_ms(a.p99_ms, b.p99_ms)),
            ]
        return rows

    def status_of(self, url: str, body: dict, key: str) -> int:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(url, data=orjson.dumps(body), method="POST",
                                         headers={"content-type": "application/json", "x-api-key": key,
                                                  "anthropic-version": "2023-06-01"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def admission(self, antex: Process, url: str, config: Path) -> None:
        """A key with a long history vs a fresh key, on the same running Antex, alternating requests.

        The history is inserted straight into SQLite while Antex runs; the key is new to the
        server, so its first request pays the one-time load of its 7 days, measured on its own.
        """
        s = self.settings
        heavy_id, heavy = antex_instance.create_key(config, "heavy")
        _, fresh = antex_instance.create_key(config, "fresh")
        database = config.parent / "antex.db"
        seed_s = antex_instance.seed_events(database, heavy_id, s.seed_events, time.time())
        time.sleep(1)  # the key cache polls 4 times a second
        result = self.probe("latency", "--url", url + "/v1/messages", "--keys", f"{heavy},{fresh}",
                            "--requests", str(s.admission_requests), "--warmup", "20")
        heavy_t, fresh_t = result["keys"]
        usage_h, usage_f = self.probe("latency", "--url", url + "/v1/usage", "--keys", f"{heavy},{fresh}", "--get",
                                      "--requests", str(s.admission_requests // 3), "--warmup", "5")["keys"]
        p50_h, p50_f = heavy_t["total_ms"]["p50"], fresh_t["total_ms"]["p50"]
        rss_mb = antex.memory_kb() / 1024
        rows = [
            Row("request latency p50 (history vs fresh key)", fmt(p50_f, " ms", 3) + " (fresh)",
                fmt(p50_h, " ms", 3) + f" ({s.seed_events:,} events)", ratio(p50_h, p50_f), "≤ 1.10×", p50_h <= 1.10 * p50_f),
            Row("request latency p99 (history vs fresh key)", fmt(fresh_t["total_ms"]["p99"], " ms", 3) + " (fresh)",
                fmt(heavy_t["total_ms"]["p99"], " ms", 3), ratio(heavy_t["total_ms"]["p99"], fresh_t["total_ms"]["p99"])),
            Row("x-antex-overhead-ms p50 (history vs fresh key)", fmt(fresh_t["overhead_ms"]["p50"], " ms", 3) + " (fresh)",
                fmt(heavy_t["overhead_ms"]["p50"], " ms", 3), ratio(heavy_t["overhead_ms"]["p50"], fresh_t["overhead_ms"]["p50"])),
            Row("first request of the key (loads its 7 days once)", fmt(fresh_t["first_ms"], " ms") + " (fresh)",
                fmt(heavy_t["first_ms"], " ms")),
            Row("GET /v1/usage latency p50 (history vs fresh key)", fmt(usage_f["total_ms"]["p50"], " ms", 3) + " (fresh)",
                fmt(usage_h["total_ms"]["p50"], " ms", 3), ratio(usage_h["total_ms"]["p50"], usage_f["total_ms"]["p50"])),
        ]
        self.sections.append(("Admission with a long history", rows))
        self.notes.append(f"Admission: {s.seed_events:,} events inserted with one executemany in {seed_s:.1f} s; "
                          f"Antex RSS after loading that key: {rss_mb:.0f} MB.")
        if heavy_t["errors"] or fresh_t["errors"] or usage_h["errors"] or usage_f["errors"]:
            self.notes.append(f"Admission probe errors: {heavy_t['errors']} / {fresh_t['errors']}; "
                              f"/v1/usage: {usage_h['errors']} / {usage_f['errors']}.")

    def pool(self) -> None:
        """Several upstreams: a pool of two healthy upstreams costs no more than one, and a failover
        before the first byte adds no more than one upstream round trip."""
        s = self.settings
        fake, fake_url = self.start("fake-pool", python("-m", "tests.fake_anthropic", "--port", "0", "--events",
                                                        str(s.events)), LOAD_CPUS)
        # Every Sonnet request gets 429 with retry-after 0: tried first each time, cooled down never.
        _, limited_url = self.start("fake-429", python("-m", "tests.fake_anthropic", "--port", "0", "--rate-limit",
                                                       "sonnet=0"), LOAD_CPUS)
        one, one_url, _, one_key = self.start_antex("antex-one", fake_url)
        two, two_url, _, two_key = self.start_antex("antex-two", fake_url, pool=[("a", fake_url, 1), ("b", fake_url, 1)])
        messages = "/v1/messages"
        single, double = self.compare("pool c32", [(one, one_url + messages, MESSAGES_BODY),
                                                   (two, two_url + messages, MESSAGES_BODY)], fake, one_key, 32,
                                      keys=[one_key, two_key])
        rows = [Row(f"two healthy upstreams vs one, {measure}", *cells)
                for measure, *cells in self.pool_cells(single, double)]
        _, failover_url, _, failover_key = self.start_antex(
            "antex-failover", fake_url, pool=[("limited", limited_url, 1), ("healthy", fake_url, 2)])
        _, limited_only_url, _, limited_only_key = self.start_antex("antex-limited", limited_url)
        # Interleaved in one run, so the machine's moods hit each alike: a request through Antex to
        # the healthy upstream; one that fails over (the 429, then the healthy upstream); the 429
        # itself through Antex (its round trip as Antex sees it, plus the client's hop, minus
        # Antex's own work: total minus x-antex-overhead-ms); and, for reference, both upstreams
        # straight from the probe.
        targets = {"one": (one_url + messages, one_key, 200),
                   "failover": (failover_url + messages, failover_key, 200),
                   "limited": (limited_only_url + messages, limited_only_key, 429),
                   "upstream": (fake_url + messages, antex_instance.DEFAULT_API_KEY, 200),
                   "upstream 429": (limited_url + messages, antex_instance.DEFAULT_API_KEY, 429)}
        measured = self.probe("latency", "--urls", ",".join(url for url, _, _ in targets.values()),
                              "--keys", ",".join(key for _, key, _ in targets.values()),
                              "--expect", ",".join(str(status) for _, _, status in targets.values()),
                              "--requests", str(s.latency_requests), "--warmup", "20", "--new-conversations")
        latency = dict(zip(targets, measured["keys"]))
        p50 = {name: latency[name]["total_ms"]["p50"] for name in targets}
        overhead = {name: latency[name]["overhead_ms"]["p50"] for name in ("one", "failover", "limited")}
        added = p50["failover"] - p50["one"]
        round_trip = p50["limited"] - overhead["limited"]
        rows.append(Row("failover before the first byte (429, then the next upstream): added latency p50",
                        fmt(p50["one"], " ms", 3) + " (no failover)", fmt(p50["failover"], " ms", 3),
                        delta_ms(p50["failover"], p50["one"]),
                        f"≤ the 429's round trip through Antex ({fmt(round_trip, ' ms', 3)})", added <= round_trip))
        rows.append(Row("failover: Antex's own work per request (x-antex-overhead-ms p50)",
                        fmt(overhead["one"], " ms", 3) + " (no failover)", fmt(overhead["failover"], " ms", 3),
                        delta_ms(overhead["failover"], overhead["one"])))
        self.notes.append(
            "Pool failover, interleaved p50s: through Antex to the healthy upstream "
            f"{fmt(p50['one'], ' ms', 3)} (its own work {fmt(overhead['one'], ' ms', 3)}), failing over "
            f"{fmt(p50['failover'], ' ms', 3)} ({fmt(overhead['failover'], ' ms', 3)}), the 429 through Antex "
            f"{fmt(p50['limited'], ' ms', 3)} ({fmt(overhead['limited'], ' ms', 3)}); straight from the probe: the "
            f"healthy upstream {fmt(p50['upstream'], ' ms', 3)}, the 429 {fmt(p50['upstream 429'], ' ms', 3)}.")
        errors = {name: timing["errors"] for name, timing in latency.items() if timing["errors"]}
        if errors:
            self.notes.append(f"Pool: unexpected statuses {errors}.")
        self.sections.append(("Upstream pool (left: one upstream; right: two, or a failover)", rows))
        self.stop_all()

    @staticmethod
    def pool_cells(single: Measured, double: Measured) -> list[tuple]:
        rps_ratio, cpu_ratio = double.vs(single)
        return [("32 connections: throughput", fmt(single.rps, " req/s", 0), fmt(double.rps, " req/s", 0),
                 times(rps_ratio), "≥ 0.95×", rps_ratio >= 0.95),
                ("proxy CPU per request", fmt(single.cpu_us, " µs", 0), fmt(double.cpu_us, " µs", 0),
                 times(cpu_ratio), "≥ 0.95×", cpu_ratio >= 0.95)]

    def timing(self) -> None:
        """Time to first byte and per-event transit, one stream at a time, against the paced upstream.

        A stall watcher on each CPU (bench/stall_watch.py) records the spells in which the VM ran
        nothing there; the "no event held back" target is judged on the events that crossed none,
        with the slowest of all events shown beside it."""
        s = self.settings
        paced, paced_url = self.start("paced", python("-m", "bench.paced_upstream", "--events", str(s.events),
                                                      "--delay-s", str(s.paced_delay_s)), LOAD_CPUS)
        bare, bare_url = self.start("bare-paced", python("-m", "bench.bare_proxy", "--upstream", paced_url), PROXY_CPUS)
        antex, antex_url, _, key = self.start_antex("antex-paced", paced_url)
        watchers = [self.start_stall_watch(cpus) for cpus in (PROXY_CPUS, LOAD_CPUS)]
        b, a = (self.probe("latency", "--url", url + "/v1/messages", "--keys", key, "--stream", "--stamped",
                           "--requests", str(s.stamped_requests), "--warmup", "10")["keys"][0]
                for url in (bare_url, antex_url))
        watched = [stall_watch.stop_and_read(*watcher) for watcher in watchers]
        rows = [
            Row("time to first byte p50", fmt(b["ttfb_ms"]["p50"], " ms", 3), fmt(a["ttfb_ms"]["p50"], " ms", 3),
                delta_ms(a["ttfb_ms"]["p50"], b["ttfb_ms"]["p50"])),
            Row("time to first byte p99", fmt(b["ttfb_ms"]["p99"], " ms", 3), fmt(a["ttfb_ms"]["p99"], " ms", 3),
                delta_ms(a["ttfb_ms"]["p99"], b["ttfb_ms"]["p99"])),
            *self.transit_rows(b, a, watched),
        ]
        self.sections.append((f"Streaming timing ({s.events} events, {s.paced_delay_s * 1000:g} ms apart, one stream at a time)",
                              rows))
        self.stop_all()

    def start_stall_watch(self, cpus: set[int]) -> tuple[Process, Path]:
        out = self.work_dir / f"stalls-cpu{min(cpus)}.json"
        watcher = Process(f"stall-watch-cpu{min(cpus)}", python("-m", "bench.stall_watch", "--out", str(out)),
                          self.logs, cpus)
        self.started.append(watcher)
        watcher.wait_for_line("watching")
        return watcher, out

    def transit_rows(self, b: dict, a: dict, watched: list[dict]) -> list[Row]:
        """Event transit, bare (b) vs Antex (a): p50, p99 and max of all events, and the max of the
        events no machine stall crossed (the target)."""
        rows = []
        for name in ("p50", "p99", "max"):
            bt, at = b["transit_ms"][name], a["transit_ms"][name]
            target = {"p99": "≤ +1 ms", "max": "(stalls included)"}.get(name, "")
            rows.append(Row(f"event transit upstream → client, {name}", fmt(bt, " ms", 3), fmt(at, " ms", 3),
                            delta_ms(at, bt), target, (at - bt <= 1.0) if name == "p99" else None))
        stalls = [stall for w in watched for stall in w["stalls"]]
        clear = [stall_watch.clear_transits_ms(r["stamped"], stalls) for r in (b, a)]
        bt, at = (max(times_ms, default=None) for times_ms in clear)
        realtime = all(w["realtime"] for w in watched)  # else a busy proxy could make its own "stalls": no verdict
        rows.append(Row("event transit, max of the events no machine stall crossed", fmt(bt, " ms", 3),
                        fmt(at, " ms", 3), delta_ms(at, bt), "≤ +1 ms" if realtime else "n/a (watcher not real-time)",
                        (at is not None and bt is not None and at - bt <= 1.0) if realtime else None))
        during = [stall_watch.stalls_within(r["stamped"], stalls) for r in (b, a)]
        longest_ms = max((end - start for start, end in stalls), default=0) / 1e6
        priority = ("at real-time priority, so no process could delay it" if realtime
                    else "NOT at real-time priority (no permission), so a busy proxy could delay it too")
        self.notes.append(f"Event transit: {a['transit_ms']['n']:,} events through Antex, {b['transit_ms']['n']:,} through "
                          f"the bare proxy; each content_block_delta carries the upstream's CLOCK_MONOTONIC write time.")
        self.notes.append(
            f"Machine stalls (bench/stall_watch.py: a 1 ms sleeper pinned to each CPU, {priority}; a wake-up "
            f"over {stall_watch.LATE_NS / 1e6:g} ms late means the CPU was taken from every task): {during[0]} while the bare "
            f"proxy's streams ran, {during[1]} while Antex's, the longest {longest_ms:.2f} ms. Events a stall "
            f"crossed, left out of the max-outside-stalls row only: {b['transit_ms']['n'] - len(clear[0])} of the "
            f"bare proxy's, {a['transit_ms']['n'] - len(clear[1])} of Antex's.")
        return rows

    def memory(self) -> None:
        """Peak RSS with `open_streams` streams held open at once, on fresh processes."""
        s = self.settings
        paced, paced_url = self.start("slow", python("-m", "bench.paced_upstream", "--events", str(s.events),
                                                     "--delay-s", str(s.hold_delay_s)), LOAD_CPUS)
        figures = []
        for name in ("bare", "antex"):
            if name == "bare":
                proxy, url = self.start("bare-slow", python("-m", "bench.bare_proxy", "--upstream", paced_url), PROXY_CPUS)
                key = "none"
            else:
                proxy, url, _, key = self.start_antex("antex-slow", paced_url)
            # One short stream first, so the idle figure includes the warmed-up pools and caches.
            self.probe("latency", "--url", url + "/v1/messages", "--keys", key, "--stream", "--requests", "2", "--warmup", "1")
            idle_kb = proxy.memory_kb()
            peak = [idle_kb]
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.is_set():
                    peak[0] = max(peak[0], proxy.memory_kb())
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample)
            sampler.start()
            held = self.probe("hold", "--url", url + "/v1/messages", "--keys", key, "--streams", str(s.open_streams))
            sampling.set()
            sampler.join()
            hwm_kb = proxy.memory_kb("VmHWM")
            figures.append((idle_kb / 1024, max(peak[0], hwm_kb) / 1024, held))
            proxy.stop()
            self.started.remove(proxy)
        (b_idle, b_peak, b_held), (a_idle, a_peak, a_held) = figures
        per = lambda idle, peak: (peak - idle) * 1024 / s.open_streams
        rows = [
            Row("RSS before (warmed up, idle)", fmt(b_idle, " MB", 1), fmt(a_idle, " MB", 1), ""),
            Row(f"peak RSS with {s.open_streams:,} open streams", fmt(b_peak, " MB", 1), fmt(a_peak, " MB", 1),
                ratio(a_peak, b_peak), "≤ 150 MB", a_peak <= 150),
            Row("memory per open stream", fmt(per(b_idle, b_peak), " KB", 1), fmt(per(a_idle, a_peak), " KB", 1),
                ratio(per(a_idle, a_peak), per(b_idle, b_peak))),
        ]
        self.sections.append((f"{s.open_streams:,} concurrent open streams", rows))
        for name, held in (("bare", b_held), ("Antex", a_held)):
            if held["peak_open"] < s.open_streams or held["errors"]:
                self.notes.append(f"{name}: only {held['peak_open']} of {s.open_streams} streams were open at once "
                                  f"({held['errors']} errors).")
        self.notes.append(f"Open streams: {a_held['peak_open']:,} were open at once through Antex "
                          f"({s.events} events {s.hold_delay_s * 1000:g} ms apart, each held {s.events * s.hold_delay_s:g} s).")
        self.stop_all()

    def instances(self) -> None:
        """Several processes on one PostgreSQL database: see bench/instances.py."""
        from bench import instances

        instances.run(self)

    def ledger(self) -> None:
        """Credit events written per second under load, and how many wait unwritten (in-process variant)."""
        s = self.settings
        fake, fake_url = self.start("fake-ledger", python("-m", "tests.fake_anthropic", "--port", "0", "--events",
                                                          str(s.events)), LOAD_CPUS)
        samples = self.work_dir / "unwritten.json"
        antex, url, config, key = self.start_antex(
            "antex-ledger", fake_url,
            argv_for=lambda config: python("-m", "bench.ledger_watch", "serve", "--config", str(config), "--samples", str(samples)))
        database = config.parent / "antex-ledger.db"
        counts: list[tuple[float, int]] = []
        done = threading.Event()

        def count() -> None:
            while not done.is_set():
                counts.append((time.perf_counter(), antex_instance.count_events(database)))
                time.sleep(0.5)

        before = antex_instance.count_events(database)
        counter = threading.Thread(target=count)
        counter.start()
        (load,) = self.compare("ledger watch c64", [(antex, url + "/v1/messages", MESSAGES_BODY)], fake, key, 64)
        done.set()
        counter.join()
        antex.stop()
        self.started.remove(antex)
        written = antex_instance.count_events(database) - before
        watched = orjson.loads(samples.read_text())
        # Rows written per second while wrk's measured run was going (the warm-up is excluded by the slope).
        rates = [(n2 - n1) / (t2 - t1) for (t1, n1), (t2, n2) in zip(counts, counts[1:]) if n2 > n1]
        sustained = sorted(rates)[len(rates) // 2] if rates else None
        capacity = self.capacity(database)
        rows = [
            Row("credit events written per second under load (median of 0.5 s slices)", "", fmt(sustained, "/s", 0),
                f"wrk: {load.rps:,.0f} req/s"),
            Row("unwritten charges at any moment: max / p99 (sampled every 2 ms)", "",
                f"{watched['max']} / {watched['p99']}"),
            Row("writer capacity (charges handed in as fast as possible)", "",
                fmt(capacity["events"] / capacity["elapsed_s"], " events/s", 0),
                f"peak unwritten {capacity['peak_unwritten']:,}"),
        ]
        self.sections.append(("SQLite credit events (in-process variant reads Ledger.unwritten)", rows))
        self.notes.append(f"Ledger: {written:,} events written for {load.requests:,} measured requests plus the warm-up; "
                          f"every settled request is one row. Unwritten was non-zero in {100 * watched['nonzero_share']:.0f}% "
                          f"of {watched['samples']:,} samples.")
        self.stop_all()

    def capacity(self, database: Path) -> dict:
        process = Process("capacity", python("-m", "bench.ledger_watch", "capacity", "--database", str(database),
                                             "--events", str(self.settings.capacity_events)), self.logs, PROXY_CPUS)
        process.popen.wait()
        text = process.log_path.read_text()
        process.stop()
        line = next((line for line in text.splitlines() if line.startswith("CAPACITY ")), None)
        if line is None:
            raise RuntimeError(f"ledger capacity run failed: {text[-2000:]}")
        return orjson.loads(line[9:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Antex vs a bare aiohttp pass-through.")
    parser.add_argument("--quick", action="store_true", help="a ~1-minute smoke run (short runs, fewer requests)")
    parser.add_argument("--seconds", type=float, help="seconds per measured wrk run")
    parser.add_argument("--only", help="comma-separated sections: throughput,pool,timing,memory,ledger,instances")
    parser.add_argument("--output", help="write the results here (default: bench/RESULTS.md on a full run, "
                                         "nowhere on --quick or --only)")
    args = parser.parse_args(argv)
    if not wrk.available():
        parser.error("wrk is not installed (Debian: apt-get install wrk)")
    settings = QUICK if args.quick else Settings()
    if args.seconds:
        settings = Settings(**{**settings.__dict__, "seconds": args.seconds})
    sections = args.only.split(",") if args.only else ["throughput", "pool", "timing", "memory", "ledger", "instances"]
    output = Path(args.output) if args.output else (None if args.quick or args.only else RESULTS)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="antex-bench-") as tmp:
        bench = Bench(settings, Path(tmp))
        try:
            for name in sections:
                bench.say(f"{name}…")
                getattr(bench, name)()
        finally:
            bench.stop_all()
    bench.notes += ["Load check (proxy alone on CPU 0; upstream and wrk on CPU 1): " + "; ".join(bench.cpu_notes)]
    bench.notes.append(f"Whole run: {time.perf_counter() - started:.0f} s.")
    print(table(bench.sections))
    print()
    for note in bench.notes:
        print("- " + note)
    if output:
        output.write_text(markdown(bench.sections, bench.notes, settings.describe()))
        print(f"\nWrote {output}")
