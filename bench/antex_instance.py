"""An Antex for the bench: a temp config and database, keys made with the CLI, seeded history.

The plan is generous (no window, IP, token or concurrency limit is ever reached), so every
request the bench sends is admitted and metered like a real one, and none is refused.
"""
from __future__ import annotations

import random
import sqlite3
import subprocess
import time
from pathlib import Path

import orjson

from bench.processes import PROXY_CPUS, Process, free_port, python
from tests.fake_anthropic import DEFAULT_API_KEY

UPSTREAM_ENV = {"ANTEX_UPSTREAM_KEY": DEFAULT_API_KEY}
PLAN = """
[plans.bench]
credits_5h = 1000000000
credits_7d = 1000000000
models = ["claude-*"]
max_tokens = 128000
max_ips = 0
max_concurrent = 0
"""


def write_config(work_dir: Path, name: str, upstream_url: str,
                 pool: list[tuple[str, str, int]] | None = None) -> tuple[Path, int]:
    """A config for one Antex instance: its own database and port, upstream = `upstream_url`, or a
    pool of (name, URL, priority) entries, all with the fake's one key."""
    port = free_port()
    path = work_dir / f"{name}.toml"
    entries = "".join(f'\n[[upstreams]]\nname = "{entry}"\nbase_url = "{url}"\napi_key_env = "ANTEX_UPSTREAM_KEY"\n'
                      f'priority = {priority}\n' for entry, url, priority in pool or [])
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\ndatabase = "{work_dir / (name + ".db")}"\n'
        f'shutdown_grace_s = 2\n'
        f'max_connections_per_ip = 100000\n'  # every load generator connects from loopback
        f'\n[upstream]\nbase_url = "{upstream_url}"\n' + PLAN + entries)
    return path, port


def antex(config: Path, *args: str) -> str:
    completed = subprocess.run(python("antex.py", "--config", str(config), *args), capture_output=True, text=True,
                               cwd=Path(__file__).resolve().parent.parent, env=None, timeout=60)
    if completed.returncode != 0:
        raise RuntimeError(f"antex {' '.join(args)} failed: {completed.stderr}")
    return completed.stdout


def create_key(config: Path, name: str) -> tuple[int, str]:
    """(id, full key) of a new key on the bench plan, created by `antex keys create`."""
    created = orjson.loads(antex(config, "keys", "create", name, "--plan", "bench", "--json"))
    return created["id"], created["key"]


def seed_events(database: Path, key_id: int, count: int, now: float) -> float:
    """`count` small charges spread over the last 7 days, inserted in one executemany; returns seconds."""
    started = time.perf_counter()
    rng = random.Random(7)
    span_s = 7 * 86400 - 120
    rows = sorted(((key_id, now - rng.random() * span_s, "claude-sonnet-4-6", "/v1/messages", 25, 12, 0, 0, 0,
                    1000 + rng.randrange(1000), None, "complete") for _ in range(count)), key=lambda row: row[1])
    conn = sqlite3.connect(database)
    with conn:
        conn.executemany(
            "INSERT INTO events (key_id, ts, model, endpoint, input_tokens, output_tokens, cache_write_5m_tokens, "
            "cache_write_1h_tokens, cache_read_tokens, micro_credits, request_id, outcome) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.close()
    return time.perf_counter() - started


def count_events(database: Path) -> int:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        conn.close()


def start(config: Path, port: int, log_dir: Path, name: str = "antex", argv: list[str] | None = None) -> tuple[Process, str]:
    """`python antex.py serve` (or `argv`) on the proxy CPU; returns it once /healthz answers."""
    argv = argv or python("antex.py", "--config", str(config), "serve")
    process = Process(name, argv, log_dir, PROXY_CPUS, env=UPSTREAM_ENV)
    url = f"http://127.0.0.1:{port}"
    process.wait_for_health(url + "/healthz")
    return process, url
