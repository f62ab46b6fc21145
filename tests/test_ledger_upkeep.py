"""The ledger over time: a wall clock that steps back, growth kept in bounds (client IPs, raw
events rolled up into daily totals, `antex prune`), and revocation that no report can hold back."""
from __future__ import annotations

import ast
import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson

from antex import store
from antex.appkeys import LEDGER
from antex.credits import Usage
from antex.ledger import Charge
from antex.windows import RollingWindow
from tests.conftest import ROOT, Gateway, insert_key, sample_body
from tests.fake_anthropic import DEFAULT_API_KEY
from tests.processes import clean_env, free_port, stop

DAY = 86400


async def post(gateway: Gateway, key: str, **headers: str) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.url + "/v1/messages", json=sample_body(), headers={"x-api-key": key, **headers}) as resp:
            await resp.read()
            return resp.status


async def test_a_clock_that_steps_back_never_puts_a_charge_before_the_keys_newest(make_gateway, monkeypatch) -> None:
    gateway = await make_gateway()
    key = await gateway.create_key("alice")
    assert await post(gateway, key) == 200  # the key's windows are loaded
    first = gateway.clock()
    rebuilds = []
    original = RollingWindow.extend
    monkeypatch.setattr(RollingWindow, "extend", lambda self, *a, **k: rebuilds.append(1) or original(self, *a, **k))
    gateway.clock.advance(-120)  # NTP steps the wall clock back two minutes
    assert await post(gateway, key) == 200
    gateway.clock.advance(30)
    assert await post(gateway, key) == 200
    events = await gateway.events()
    assert [event["ts"] for event in events] == [first, first, first]  # never older than the newest
    assert rebuilds == []  # no window was rebuilt on the event loop


async def test_ips_no_limit_needs_are_forgotten_in_memory_and_in_sqlite(make_gateway) -> None:
    """max_ips = 0 keeps no limit on addresses, but the map of addresses seen must not grow forever."""
    gateway = await make_gateway(server={"trusted_proxies": ["127.0.0.1/32"]})
    key = await gateway.create_key("alice", max_ips=0)
    for n in range(20):
        assert await post(gateway, key, **{"x-forwarded-for": f"203.0.113.{n}"}) == 200
    gateway.clock.advance(DAY + 60)
    assert await post(gateway, key, **{"x-forwarded-for": "198.51.100.1"}) == 200
    await gateway.flush()
    ledger = gateway.app[LEDGER]
    assert await ledger.prune(90 * DAY) == (0, 20)
    (state,) = ledger.states.values()
    assert list(state.ips) == ["198.51.100.1"]
    db = sqlite3.connect(gateway.database)
    assert db.execute("SELECT ip FROM key_ips").fetchall() == [("198.51.100.1",)]


def charges(key_id: int, days_ago: list[float], now: float) -> list[tuple]:
    usage = Usage(input_tokens=1000, output_tokens=10)
    return [Charge(key_id, now - d * DAY, "claude-haiku-4-5", "/v1/messages", usage, 1000, None, "complete").row()
            for d in days_ago]


async def test_events_past_the_retention_become_daily_totals_that_still_export(tmp_path: Path) -> None:
    database = tmp_path / "antex.db"
    config = tmp_path / "antex.toml"
    config.write_text(f'[server]\ndatabase = "{database}"\n[events]\nretention = "30d"\n')
    await insert_key(str(database), "alice", "pro")
    midday = time.time() // DAY * DAY + DAY / 2  # today's, UTC: the first three fall on one day
    conn = await store.connect(str(database))
    await store.SqliteStore(conn).insert_events(charges(1, [100.2, 100.1, 100.05, 45, 29, 1, 0.01], midday))
    await conn.close()

    def antex(*args: str) -> str:
        done = subprocess.run([sys.executable, "antex.py", "--config", str(config), *args], cwd=ROOT, env=clean_env(),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    before = [orjson.loads(line) for line in antex("events", "--json").splitlines()]
    assert "Rolled up 4 events older than 30 days" in antex("prune")
    assert "Rolled up 0 events" in antex("prune")  # nothing left to do
    after = [orjson.loads(line) for line in antex("events", "--json").splitlines()]
    assert [(e["outcome"], e["requests"]) for e in after] == [
        ("daily_total", 3), ("daily_total", 1), ("complete", 1), ("complete", 1), ("complete", 1)]
    assert after[0]["time"].endswith("T00:00:00.000+00:00") and after[0]["endpoint"] is None
    assert sum(e["credits"] for e in after) == sum(e["credits"] for e in before)
    assert sum(e["requests"] for e in after) == len(before) == 7
    assert sum(e["input_tokens"] for e in after) == 7000
    assert [e["outcome"] for e in antex_json(antex, "--since", "7d")] == ["complete", "complete"]
    assert "daily_total" in antex("events")  # the CSV export too
    assert "--retention" in antex("prune", "--help") and "daily totals" in antex("prune", "--help")


def antex_json(antex, *args: str) -> list[dict]:
    return [orjson.loads(line) for line in antex("events", "--json", *args).splitlines()]


async def test_the_server_prunes_by_itself(make_gateway, monkeypatch) -> None:
    from antex import app as app_module

    monkeypatch.setattr(app_module, "EVENTS_PRUNE_FIRST_S", 0.05)
    gateway = await make_gateway(events={"retention": "10d"})
    await gateway.create_key("alice")
    conn = await store.connect(gateway.database)
    await store.SqliteStore(conn).insert_events(charges(1, [40, 20, 1], gateway.clock()))
    await conn.close()
    deadline = time.monotonic() + 5
    db = sqlite3.connect(gateway.database)
    while db.execute("SELECT COUNT(*) FROM events").fetchone() != (1,):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert db.execute("SELECT SUM(requests) FROM daily_usage").fetchone() == (2,)


async def test_a_revocation_lands_within_a_second_while_many_clients_poll_a_busy_keys_activity(tmp_path: Path, fake_upstream) -> None:
    """The activity of a key with 200k events takes a while to read; 48 dashboards polling it must
    not hold the key watcher's poll back (it has its own connection, and activity is shared)."""
    database = tmp_path / "antex.db"
    busy = await insert_key(str(database), "busy", "max")
    doomed = await insert_key(str(database), "doomed", "pro")
    now = time.time()
    conn = await store.connect(str(database))
    rows = charges(1, [i * 3.0 / 200_000 for i in range(200_000)], now)
    await store.SqliteStore(conn).insert_events(rows)
    await conn.commit()
    await conn.close()
    port = free_port()
    config = tmp_path / "antex.toml"
    config.write_text(f'[server]\ndatabase = "{database}"\nport = {port}\n[upstream]\nbase_url = "{fake_upstream.url}"\n')
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen([sys.executable, "antex.py", "--config", str(config), "serve"], cwd=ROOT,
                            env=clean_env(ANTEX_UPSTREAM_KEY=DEFAULT_API_KEY), stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 20
            while True:
                try:
                    async with http.get(url + "/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    assert time.monotonic() < deadline and proc.poll() is None
                    await asyncio.sleep(0.05)
            stopping = asyncio.Event()

            async def poll() -> None:
                while not stopping.is_set():
                    async with http.get(url + "/v1/usage/activity", headers={"x-api-key": busy}) as resp:
                        assert resp.status == 200
                        await resp.read()

            async def status_of_doomed() -> int:
                async with http.get(url + "/v1/usage", headers={"x-api-key": doomed}) as resp:
                    await resp.read()
                    return resp.status

            pollers = [asyncio.create_task(poll()) for _ in range(48)]
            await asyncio.sleep(2)  # the pollers are in full swing
            assert await status_of_doomed() == 200
            revoke = await asyncio.create_subprocess_exec(sys.executable, "antex.py", "--config", str(config), "keys",
                                                          "revoke", "doomed", cwd=ROOT, env=clean_env())
            assert await revoke.wait() == 0
            revoked_at = time.monotonic()
            while await status_of_doomed() != 401:
                await asyncio.sleep(0.02)
            took_s = time.monotonic() - revoked_at
            stopping.set()
            await asyncio.gather(*pollers)
        assert took_s < 1.0, f"the revocation took {took_s:.2f} s to land"
    finally:
        stop(proc)
        log.close()


def test_the_ledger_and_the_store_use_only_public_apis_of_their_libraries() -> None:
    """aiosqlite's `_execute`/`_conn` (or any other private name) may change in any release."""
    for module in ("ledger.py", "cluster.py", "store/sqlite.py", "store/postgres.py", "store/feed.py"):
        tree = ast.parse((ROOT / "antex" / module).read_text())
        private = [ast.unparse(node) for node in ast.walk(tree)
                   if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                   and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                   and node.attr != "_replace"]  # NamedTuple's public API
        assert private == [], f"{module}: {private}"
