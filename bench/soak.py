"""Soak: hundreds of clients for minutes while faults are injected at random; nothing unexplained.

`python -m bench.soak` (part of `make bench`: 500 clients for 10 minutes), `--quick` for a short
check (40 clients, 45 s). Starts a faulty fake upstream (in this process), `antex serve` on a real
SQLite file, and clients that stream or not through all three doors. Faults, at random:
- upstream: 529, 500, an error event mid-stream, a cut connection, a stall past the idle timeout,
  malformed SSE, slow replies (`--faults` of them);
- clients hanging up mid-stream (`--hang-up` of the streams);
- the database locked by another process's writer for 1-8 s, then released;
- SIGTERM, then a restart (each stop must end within shutdown_grace_s plus the bounded flush).
At the end an invariant checker verifies:
- zero unexplained errors: every answer is a success, or an error with a cause the soak knows:
  a fault the fake upstream injected into that very request (matched by the x-client-request-id each
  request carries: a 529 to a 529 or an error event, a 500 to a 500, a 502 to a cut or malformed
  reply, a 504 to a stall, a stream's error ending to any of those four), a 503 with a retry-after
  while the database was locked, a request cut or refused by a restart, or a stream the soak hung
  up on itself. Anything else (a connection error, an error no fault explains: Antex's own 500)
  is unexplained;
- every admitted request has exactly one credit event: as many events as requests Antex answered
  (with a status line; a request a restart cut before its status line may or may not have been
  admitted, so it may add one), no upstream request id charged twice, nothing left open in the
  journal (the fake upstream's own count is shown too: the pool resends a request whose pooled
  connection turned out closed, so it can count one request twice);
- every window equals the sum of its events, exactly: the key's limit is set to that sum (the
  window must read full) and to the sum plus one micro-credit (it must not);
- RSS flat: within each server run, the last sample within 20 % of the first after warm-up;
- every SIGTERM exits 0 in bounded time.
The figures are written into bench/RESULTS.md (the "Soak" section).
"""
from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

from antex import journal
from tests.fake_anthropic import CLIENT_REQUEST_ID, DEFAULT_API_KEY, FakeAnthropic
from tests.processes import clean_env, free_port, stop

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
DOORS = (  # (path, weight, body builder)
    ("/v1/messages", 6, lambda stream: {"model": "claude-sonnet-4-6", "max_tokens": 64, "stream": stream,
                                        "messages": [{"role": "user", "content": "Say hello."}]}),
    ("/v1/chat/completions", 2, lambda stream: {"model": "claude-sonnet-4-6", "stream": stream,
                                                "messages": [{"role": "user", "content": "Say hello."}]}),
    ("/v1/responses", 2, lambda stream: {"model": "claude-sonnet-4-6", "stream": stream, "input": "Say hello."}),
)
STREAM_ENDINGS = {  # how a stream that ended in an upstream failure says so, per door
    "/v1/messages": (b"event: error",),
    "/v1/chat/completions": (b'data: {"error"',),
    "/v1/responses": (b"event: response.failed", b"event: response.incomplete"),
}


GRACE_S = 5
STOP_BOUND_S = GRACE_S + 5 + 2 + 5  # grace, the ledger's bounded flush, the writer's busy timeout, slack
WARM_UP_S = 20  # RSS samples of a server run count from this long after it started (shorter for short runs)
LOCK_SLACK_S = 10  # after a lock is released, the store's retry backoff may still refuse for this long
CAUSES = {  # an error answer -> the injected fault kinds (tests/fake_anthropic.FAULTS) that explain it
    "error 529 overloaded_error": {"529", "error event"},  # a non-streaming error event is a 529
    "error 500 api_error": {"500"},
    "error 502 api_error": {"cut", "malformed"},
    "error 504 api_error": {"stall"},
    "stream ended with an upstream error": {"error event", "cut", "stall", "malformed"},
}


@dataclass
class Tally:
    outcomes: Counter = field(default_factory=Counter)
    unexplained: list[str] = field(default_factory=list)
    faults: Counter = field(default_factory=Counter)
    stops: list[tuple[int, float]] = field(default_factory=list)  # (exit code, seconds) per SIGTERM
    runs: list[list[tuple[float, float]]] = field(default_factory=lambda: [[]])  # per server run: (age s, RSS MB)
    restarts: int = 0  # bumped when a stop begins: requests that saw one are explained by it
    stopping: bool = False
    answered: int = 0  # requests Antex answered with a status line: each admitted, each one credit event
    unanswered_in_restart: int = 0  # connection failures around a restart, before any status line
    sent: int = 0  # requests sent: each one's x-client-request-id is soak-<n>
    errors: list["Failed"] = field(default_factory=list)  # error answers, matched to causes at the end
    locks: list[tuple[float, float]] = field(default_factory=list)  # (taken, released), monotonic s
    causes: Counter = field(default_factory=Counter)  # error answers per cause found


@dataclass
class Failed:
    """An error answer outside a restart: what the client saw, and when, to be matched to a cause."""
    client_id: str
    what: str  # an answer as explain() names it
    detail: str  # path, status and the start of the body, for the report
    retry_after: bool
    started: float
    ended: float


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Server:
    """`antex serve` as a real process, started again after every SIGTERM."""

    def __init__(self, work: Path, config: Path, port: int) -> None:
        self.config, self.url = config, f"http://127.0.0.1:{port}"
        self.log_path = work / "server.log"
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "antex.py", "--config", str(self.config), "serve"], cwd=ROOT,
                                         env=clean_env(ANTEX_UPSTREAM_KEY=DEFAULT_API_KEY), stdout=log, stderr=log)
        self.started = time.monotonic()
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                if self.proc.poll() is not None:
                    raise SystemExit(f"antex serve exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
                try:
                    async with http.get(self.url + "/healthz") as resp:
                        if resp.status in (200, 503):  # 503: up, and saying the database is failing
                            await asyncio.sleep(0.5)  # the key cache has every key
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
        raise SystemExit("antex serve did not come up")

    async def sigterm(self) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.get_running_loop().run_in_executor(None, lambda: self.proc.wait(timeout=120))
        except subprocess.TimeoutExpired:
            stop(self.proc)
            code = -9
        return code, time.monotonic() - started


def cli(config: Path, *args: str) -> bytes:
    return subprocess.run([sys.executable, "antex.py", "--config", str(config), *args], cwd=ROOT, env=clean_env(),
                          check=True, capture_output=True, timeout=60).stdout


async def one_request(http: aiohttp.ClientSession, url: str, key: str, rng: random.Random, tally: Tally,
                      hang_up_share: float) -> None:
    path, _, build = rng.choices(DOORS, weights=[d[1] for d in DOORS])[0]
    stream = rng.random() < 0.6
    hang_up = stream and rng.random() < hang_up_share
    restarts = tally.restarts
    answered = False
    tally.sent += 1
    client_id = f"soak-{tally.sent}"
    started = time.monotonic()
    try:
        async with http.post(url + path, data=orjson.dumps(build(stream)),
                             headers={"authorization": f"Bearer {key}", "content-type": "application/json",
                                      CLIENT_REQUEST_ID: client_id}) as resp:
            answered = True
            tally.answered += 1
            if hang_up:
                await resp.content.readany()
                resp.close()
                tally.outcomes["client hung up"] += 1
                return
            body = await resp.read()
            in_restart = restarts != tally.restarts
            what = explain(path, stream, resp.status, body, None if in_restart else tally)
            tally.outcomes[what if what != "unexplained" or not in_restart else "cut by a restart"] += 1
            if what.startswith(("error", "stream ended")) and not in_restart:
                tally.errors.append(Failed(client_id, what, f"{path} stream={stream} {resp.status}: {body[-160:]!r}",
                                           "retry-after" in resp.headers, started, time.monotonic()))
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        if restarts != tally.restarts or tally.stopping:
            tally.outcomes["cut or refused by a restart"] += 1
            tally.unanswered_in_restart += not answered
            await asyncio.sleep(0.1)  # the server is coming back
        else:
            tally.unexplained.append(f"{path} stream={stream}: {exc!r}")


def explain(path: str, stream: bool, status: int, body: bytes, tally: Tally | None) -> str:
    """Name what happened, or record it as unexplained (in `tally`, when one is given)."""
    if status >= 400:
        try:
            error = orjson.loads(body)
            kind = error["error"]["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            if tally:
                tally.unexplained.append(f"{path} {status}: {body[:200]!r}")
            return "unexplained"
        return f"error {status} {kind}"
    if not stream:
        return "ok"
    last = body.rstrip().rsplit(b"\n\n", 1)[-1]
    if any(ending in last for ending in STREAM_ENDINGS[path]):
        return "stream ended with an upstream error"
    finished = {"/v1/messages": b"message_stop", "/v1/chat/completions": b"[DONE]", "/v1/responses": b"response.completed"}
    if finished[path] in last:
        return "ok"
    if tally:
        tally.unexplained.append(f"{path} stream ended oddly: {last[-200:]!r}")
    return "unexplained"


async def client(url: str, key: str, deadline: float, seed: int, tally: Tally, hang_up_share: float) -> None:
    rng = random.Random(seed)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        while time.monotonic() < deadline:
            await one_request(http, url, key, rng, tally, hang_up_share)


async def hold_database_lock(database: Path, seconds: float, tally: Tally) -> None:
    """Another process's writer holding SQLite's write lock for `seconds`, then letting go."""
    loop = asyncio.get_running_loop()
    conn = await loop.run_in_executor(None, lambda: sqlite3.connect(database, isolation_level=None, timeout=30,
                                                                   check_same_thread=False))
    taken = time.monotonic()  # (from the first try: the lock may be had at once)
    try:
        await loop.run_in_executor(None, conn.execute, "BEGIN EXCLUSIVE")
        await asyncio.sleep(seconds)
        await loop.run_in_executor(None, conn.rollback)
    finally:
        await loop.run_in_executor(None, conn.close)
        tally.locks.append((taken, time.monotonic()))


def match_causes(tally: Tally, faulted: dict[str, list[str]]) -> None:
    """Name the cause of every error answer in `tally.errors` (counted in `tally.causes`); an answer
    none explains goes to `tally.unexplained`. `faulted`: the fake's client request id -> kinds."""
    for failed in tally.errors:
        kinds = set(faulted.get(failed.client_id, ())) & CAUSES.get(failed.what, set())
        if kinds:
            tally.causes[f"{failed.what} <- upstream {'/'.join(sorted(kinds))}"] += 1
        elif failed.what.startswith("error 503 ") and failed.retry_after and any(
                failed.started <= released + LOCK_SLACK_S and failed.ended >= taken for taken, released in tally.locks):
            tally.causes[f"{failed.what} <- database locked"] += 1
        else:
            injected = ", ".join(faulted.get(failed.client_id, ())) or "none"
            tally.unexplained.append(f"{failed.detail} (faults injected into it: {injected})")


async def inject_faults(server: Server, database: Path, quiet_from: float, every_s: float, seed: int,
                        tally: Tally) -> None:
    """Until `quiet_from`: a database lock or a SIGTERM and restart every `every_s` on average. A
    lock may still be held when a stop and the next start come (a start on a locked database)."""
    rng = random.Random(seed)
    locks: list[asyncio.Task] = []
    while True:
        due = time.monotonic() + rng.expovariate(1 / every_s)
        await asyncio.sleep(max(0.0, min(due, quiet_from) - time.monotonic()))  # never sleep past the quiet end
        if time.monotonic() >= quiet_from:
            await asyncio.gather(*locks)
            return
        if rng.random() < 0.7:
            tally.faults["database locked"] += 1
            locks.append(asyncio.create_task(hold_database_lock(database, rng.uniform(1, 8), tally)))
        else:
            tally.faults["SIGTERM and restart"] += 1
            tally.restarts += 1
            tally.stopping = True
            tally.stops.append(await server.sigterm())
            tally.runs.append([])
            await server.start()
            tally.stopping = False


async def sample_rss(server: Server, tally: Tally, until: float) -> None:
    while time.monotonic() < until:
        await asyncio.sleep(2)
        if server.proc is not None and server.proc.poll() is None and not tally.stopping:
            tally.runs[-1].append((time.monotonic() - server.started, rss_mb(server.proc.pid)))


async def settled_events(database: Path) -> int:
    """The number of credit events once it stops moving (every settled charge is written)."""
    last, same_since = -1, time.monotonic()
    while True:
        db = sqlite3.connect(database)
        count = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        db.close()
        if count != last:
            last, same_since = count, time.monotonic()
        elif time.monotonic() - same_since > 1.5:
            return count
        await asyncio.sleep(0.25)


async def windows_match_events(server: Server, config: Path, database: Path, key: str) -> tuple[bool, int]:
    """Whether the running server's windows hold exactly the sum of the key's events: with the limit
    set to that sum both windows must read full, with one micro-credit more neither may."""
    db = sqlite3.connect(database)
    total = db.execute("SELECT COALESCE(SUM(micro_credits), 0) FROM events").fetchone()[0]  # all within 5 h
    db.close()
    statuses = []
    for limit in (total, total + 1):
        credits = repr(limit / 1_000_000)
        cli(config, "keys", "set", "soak", "--credits-5h", credits, "--credits-7d", credits)
        await asyncio.sleep(1.0)  # the key watcher has the new limits
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url + "/v1/usage", headers={"x-api-key": key}) as resp:
                body = await resp.json()
        statuses.append((body["five_hour"]["status"], body["seven_day"]["status"]))
    return statuses[0] == ("rejected", "rejected") and "rejected" not in statuses[1], total


async def soak(clients: int, seconds: float, faults: float, hang_up_share: float, fault_every_s: float,
               seed: int) -> dict:
    fake = FakeAnthropic(record=False, events=20, faults=faults, seed=7)
    await fake.start()
    work = Path(tempfile.mkdtemp(prefix="antex-soak-"))
    database, port = work / "antex.db", free_port()
    config = work / "antex.toml"
    # Every client comes from 127.0.0.1 but stands for a user of its own: the per-address cap is
    # set above their number (each holds one connection, and briefly a second after a hang-up).
    config.write_text(f'[server]\ndatabase = "{database}"\nport = {port}\nshutdown_grace_s = {GRACE_S}\n'
                      f'max_connections_per_ip = {2 * clients + 64}\n'
                      f'[upstream]\nbase_url = "{fake.url}"\nidle_timeout_s = 2\n')
    key = orjson.loads(cli(config, "keys", "create", "soak", "--plan", "max", "--json"))["key"]
    cli(config, "keys", "set", "soak", "--credits-5h", "1e12", "--credits-7d", "1e12", "--max-concurrent", "0",
        "--max-ips", "0")
    server = Server(work, config, port)
    tally = Tally()
    try:
        await server.start()
        started = time.monotonic()
        deadline = started + seconds
        quiet_from = deadline - min(20, seconds / 4)  # the end runs without faults: RSS settles, the last run is long
        load = [asyncio.create_task(client(server.url, key, deadline, seed, tally, hang_up_share)) for seed in range(clients)]
        faulting = asyncio.create_task(inject_faults(server, database, quiet_from, fault_every_s, seed, tally))
        await sample_rss(server, tally, deadline)
        await asyncio.gather(*load)
        await faulting
        events = await settled_events(database)
        windows_exact, window_total = await windows_match_events(server, config, database, key)
        tally.stops.append(await server.sigterm())
    finally:
        if server.proc is not None:
            stop(server.proc)
        await fake.close()
    match_causes(tally, fake.faulted)
    db = sqlite3.connect(database)
    with_id, distinct_ids = db.execute("SELECT COUNT(request_id), COUNT(DISTINCT request_id) FROM events").fetchone()
    settled = orjson.loads(db.execute("SELECT ids FROM journal_settled").fetchone()[0])
    outcomes = dict(db.execute("SELECT outcome, COUNT(*) FROM events GROUP BY outcome").fetchall())
    db.close()
    left_open = len(journal.read_open(journal.path_for(str(database)), settled))
    warm_up_s = min(WARM_UP_S, seconds / 8)
    growth = [(run[-1][1] / warm[0][1], warm[0][1], run[-1][1])
              for run in tally.runs if (warm := [sample for sample in run if sample[0] >= warm_up_s])]
    log = server.log_path.read_text(errors="replace")
    return {
        "clients": clients, "seconds": seconds, "faults": faults, "requests": sum(tally.outcomes.values()),
        "answers": dict(tally.outcomes), "unexplained": tally.unexplained, "upstream_served": fake.served,
        "answered": tally.answered, "unanswered_in_restart": tally.unanswered_in_restart,
        "events": events, "events_with_request_id": with_id, "distinct_request_ids": distinct_ids,
        "left_open": left_open, "event_outcomes": outcomes, "windows_exact": windows_exact,
        "window_total_credits": window_total / 1_000_000, "injected": dict(tally.faults), "upstream_faults": dict(fake.injected),
        "causes": dict(tally.causes), "stops": tally.stops,
        "rss_runs": growth, "rss_peak_mb": max((mb for run in tally.runs for _, mb in run), default=0.0),
        "warm_up_s": warm_up_s, "traceback_in_log": "Traceback" in log,
        "store_failures_logged": log.count("writing to SQLite failed"),
    }


def verdicts(r: dict) -> list[tuple[str, bool]]:
    return [
        ("zero unexplained errors", not r["unexplained"]),
        ("no upstream request charged twice", r["events_with_request_id"] == r["distinct_request_ids"]),
        ("one credit event per admitted request (answered <= events <= answered + cut by a restart before its status)",
         r["answered"] <= r["events"] <= r["answered"] + r["unanswered_in_restart"]),
        ("no journal entry left open", r["left_open"] == 0),
        ("every window equals the sum of its events (exact, in micro-credits)", r["windows_exact"]),
        ("RSS flat (each run's last sample within 20 % of its first after warm-up)",
         bool(r["rss_runs"]) and all(ratio <= 1.2 for ratio, _, _ in r["rss_runs"])),
        (f"every SIGTERM exits 0 within {STOP_BOUND_S} s", all(code == 0 and took < STOP_BOUND_S for code, took in r["stops"])),
        ("no traceback in the server log", not r["traceback_in_log"]),
    ]


def report(r: dict) -> str:
    stops = r["stops"]
    lines = [
        "## Soak",
        "",
        f"{r['clients']} concurrent clients for {r['seconds']:g} s through all three doors (60 % streaming, "
        f"some hanging up mid-stream), with {r['faults']:.0%} of upstream replies faulty "
        "(529, 500, error event mid-stream, cut, stall past the idle timeout, malformed SSE, slow), and at random "
        "the database locked by another writer for 1-8 s or the server stopped with SIGTERM and restarted.",
        "",
        "| check | result |",
        "|---|---|",
        *[f"| {name} | {'yes' if ok else '**no**'} |" for name, ok in verdicts(r)],
        "",
        f"- requests: {r['requests']:,}; answered by Antex {r['answered']:,} (and {r['unanswered_in_restart']:,} cut by a "
        f"restart before a status line); upstream attempts {r['upstream_served']:,}; credit events {r['events']:,} "
        f"({r['events_with_request_id']:,} with an upstream request id, all distinct: "
        f"{r['events_with_request_id'] == r['distinct_request_ids']})",
        f"- faults injected: {', '.join(f'{k} {v}' for k, v in sorted(r['injected'].items())) or 'none'}; "
        f"store failures logged: {r['store_failures_logged']}",
        f"- stops: {len(stops)}, slowest {max((took for _, took in stops), default=0):.1f} s, exit codes "
        f"{sorted({code for code, _ in stops})}",
        f"- upstream faults injected: {', '.join(f'{k} {v:,}' for k, v in sorted(r['upstream_faults'].items())) or 'none'}",
        f"- answers: {', '.join(f'{k} {v:,}' for k, v in sorted(r['answers'].items()))}",
        f"- error answers by cause: {', '.join(f'{k} {v:,}' for k, v in sorted(r['causes'].items())) or 'none'}; "
        f"unexplained {len(r['unexplained']):,}",
        f"- credit events by outcome: {', '.join(f'{k} {v:,}' for k, v in sorted(r['event_outcomes'].items()))}",
        f"- windows checked against {r['window_total_credits']:,.6f} credits of events",
        f"- RSS per server run (after {r['warm_up_s']:g} s warm-up, first -> last MB): "
        + ", ".join(f"{first:.0f} -> {last:.0f}" for _, first, last in r["rss_runs"]) + f"; peak {r['rss_peak_mb']:.0f} MB",
    ]
    if r["unexplained"]:
        lines += ["", "Unexplained (first 10):", *[f"- `{u}`" for u in r["unexplained"][:10]]]
    return "\n".join(lines) + "\n"


def write_results(section: str) -> None:
    """Replace (or add) the Soak section of bench/RESULTS.md."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    head, marker, rest = text.partition("## Soak")
    tail = rest.split("\n## ", 1)[1] if marker and "\n## " in rest else ""
    RESULTS.write_text(head.rstrip() + "\n\n" + section + ("\n## " + tail if tail else ""))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a short check: 40 clients for 45 s, a fault every 6 s (not written to RESULTS.md)")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--fault-every", type=float, help="mean seconds between injected faults (lock, SIGTERM)")
    parser.add_argument("--faults", type=float, default=0.1, help="share of upstream replies that misbehave")
    parser.add_argument("--hang-up", type=float, default=0.05, help="share of streams the client abandons")
    parser.add_argument("--seed", type=int, default=11, help="of the fault schedule")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args(argv)
    defaults = (40, 45.0, 6.0) if args.quick else (500, 600.0, 30.0)
    clients, seconds, every = (given if given is not None else default
                               for given, default in zip((args.clients, args.seconds, args.fault_every), defaults))
    result = asyncio.run(soak(clients, seconds, args.faults, args.hang_up, every, args.seed))
    section = report(result)
    print(section)
    if not (args.no_write or args.quick):
        write_results(section)
    if not all(ok for _, ok in verdicts(result)):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
