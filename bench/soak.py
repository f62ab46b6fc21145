"""Soak: hundreds of clients for minutes, with disconnects and upstream faults; nothing unexplained.

`python -m bench.soak [--clients 500] [--seconds 180]` (part of `make bench`). Starts a faulty fake
upstream (in this process), `antex serve` on a real SQLite file, and `--clients` clients that
stream or not through all three doors, some hanging up mid-stream. At the end it checks:
- zero unexplained errors: every answer is a success, or an error in the door's own shape, or a
  stream that ends with its door's error event;
- RSS flat: the last sample within 20 % of the first after warm-up;
- every request the upstream served has exactly one credit event, and no journal entry is left open.
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
from tests.fake_anthropic import DEFAULT_API_KEY, FakeAnthropic
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


@dataclass
class Tally:
    outcomes: Counter = field(default_factory=Counter)
    unexplained: list[str] = field(default_factory=list)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def one_request(http: aiohttp.ClientSession, url: str, key: str, rng: random.Random, tally: Tally,
                      hang_up_share: float) -> None:
    path, _, build = rng.choices(DOORS, weights=[d[1] for d in DOORS])[0]
    stream = rng.random() < 0.6
    hang_up = stream and rng.random() < hang_up_share
    try:
        async with http.post(url + path, data=orjson.dumps(build(stream)),
                             headers={"authorization": f"Bearer {key}", "content-type": "application/json"}) as resp:
            if hang_up:
                await resp.content.readany()
                resp.close()
                tally.outcomes["client hung up"] += 1
                return
            body = await resp.read()
            tally.outcomes[explain(path, stream, resp.status, body, tally)] += 1
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        tally.unexplained.append(f"{path} stream={stream}: {exc!r}")


def explain(path: str, stream: bool, status: int, body: bytes, tally: Tally) -> str:
    """Name what happened, or record it as unexplained."""
    if status >= 400:
        try:
            error = orjson.loads(body)
            kind = error["error"]["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
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
    tally.unexplained.append(f"{path} stream ended oddly: {last[-200:]!r}")
    return "unexplained"


async def client(url: str, key: str, deadline: float, seed: int, tally: Tally, hang_up_share: float) -> None:
    rng = random.Random(seed)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        while time.monotonic() < deadline:
            await one_request(http, url, key, rng, tally, hang_up_share)


async def soak(clients: int, seconds: float, faults: float, hang_up_share: float) -> dict:
    fake = FakeAnthropic(record=False, events=20, faults=faults, seed=7)
    await fake.start()
    work = Path(tempfile.mkdtemp(prefix="antex-soak-"))
    database, port = work / "antex.db", free_port()
    config = work / "antex.toml"
    config.write_text(f'[server]\ndatabase = "{database}"\nport = {port}\nshutdown_grace_s = 10\n'
                      f'[upstream]\nbase_url = "{fake.url}"\nidle_timeout_s = 2\n')
    log = (work / "server.log").open("wb")
    proc = subprocess.Popen([sys.executable, "antex.py", "--config", str(config), "serve"], cwd=ROOT,
                            env=clean_env(ANTEX_UPSTREAM_KEY=DEFAULT_API_KEY), stdout=log, stderr=log)
    try:
        created = subprocess.run([sys.executable, "antex.py", "--config", str(config), "keys", "create", "soak",
                                  "--plan", "max", "--json"], cwd=ROOT, env=clean_env(), check=True,
                                 capture_output=True, timeout=30)
        key = orjson.loads(created.stdout)["key"]
        subprocess.run([sys.executable, "antex.py", "--config", str(config), "keys", "set", "soak",
                        "--credits-5h", "1e12", "--credits-7d", "1e12", "--max-concurrent", "0", "--max-ips", "0"],
                       cwd=ROOT, env=clean_env(), check=True, capture_output=True, timeout=30)
        url = f"http://127.0.0.1:{port}"
        await wait_healthy(url, proc)
        tally, samples = Tally(), []
        started = time.monotonic()
        deadline = started + seconds
        load = [asyncio.create_task(client(url, key, deadline, seed, tally, hang_up_share)) for seed in range(clients)]
        while time.monotonic() < deadline:
            await asyncio.sleep(min(5, max(deadline - time.monotonic(), 0.1)))
            samples.append((time.monotonic() - started, rss_mb(proc.pid)))
        await asyncio.gather(*load)
        proc.send_signal(signal.SIGTERM)
        exit_code = proc.wait(timeout=60)
    finally:
        stop(proc)
        log.close()
        await fake.close()
    db = sqlite3.connect(database)
    events = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    settled = orjson.loads(db.execute("SELECT ids FROM journal_settled").fetchone()[0])
    left_open = len(journal.read_open(journal.path_for(str(database)), settled))
    outcomes = dict(db.execute("SELECT outcome, COUNT(*) FROM events GROUP BY outcome").fetchall())
    warm = [mb for at, mb in samples if at >= min(30, seconds / 3)] or [mb for _, mb in samples]
    return {
        "clients": clients, "seconds": seconds, "faults": faults, "requests": sum(tally.outcomes.values()),
        "answers": dict(tally.outcomes), "unexplained": tally.unexplained, "upstream_served": fake.served,
        "events": events, "left_open": left_open, "event_outcomes": outcomes, "exit_code": exit_code,
        "rss_first_mb": warm[0], "rss_last_mb": warm[-1], "rss_peak_mb": max(mb for _, mb in samples),
        "traceback_in_log": "Traceback" in (work / "server.log").read_text(errors="replace"),
    }


async def wait_healthy(url: str, proc: subprocess.Popen) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(400):
            if proc.poll() is not None:
                raise SystemExit(f"antex serve exited with {proc.returncode}")
            try:
                async with http.get(url + "/healthz") as resp:
                    if resp.status == 200:
                        await asyncio.sleep(0.5)  # the key cache has picked up the new key
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    raise SystemExit("antex serve did not come up")


def verdicts(r: dict) -> list[tuple[str, bool]]:
    return [
        ("zero unexplained errors", not r["unexplained"]),
        ("RSS flat (last within 20 % of first after warm-up)", r["rss_last_mb"] <= r["rss_first_mb"] * 1.2),
        ("every request the upstream served has one credit event", r["events"] == r["upstream_served"]),
        ("no journal entry left open", r["left_open"] == 0),
        ("graceful stop exits 0", r["exit_code"] == 0),
    ]


def report(r: dict) -> str:
    lines = [
        "## Soak",
        "",
        f"{r['clients']} concurrent clients for {r['seconds']:g} s through all three doors (60 % streaming, "
        f"some hanging up mid-stream), with {r['faults']:.0%} of upstream replies faulty "
        "(529, 500, error event mid-stream, cut, stall past the idle timeout, malformed SSE, slow).",
        "",
        "| check | result |",
        "|---|---|",
        *[f"| {name} | {'yes' if ok else '**no**'} |" for name, ok in verdicts(r)],
        "",
        f"- requests: {r['requests']:,}; upstream served {r['upstream_served']:,}; credit events {r['events']:,}",
        f"- answers: {', '.join(f'{k} {v:,}' for k, v in sorted(r['answers'].items()))}",
        f"- credit events by outcome: {', '.join(f'{k} {v:,}' for k, v in sorted(r['event_outcomes'].items()))}",
        f"- RSS: {r['rss_first_mb']:.0f} MB after warm-up, {r['rss_last_mb']:.0f} MB at the end, peak {r['rss_peak_mb']:.0f} MB",
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
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--faults", type=float, default=0.1, help="share of upstream replies that misbehave")
    parser.add_argument("--hang-up", type=float, default=0.05, help="share of streams the client abandons")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args(argv)
    result = asyncio.run(soak(args.clients, args.seconds, args.faults, args.hang_up))
    section = report(result)
    print(section)
    if not args.no_write:
        write_results(section)
    if not all(ok for _, ok in verdicts(result)):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
