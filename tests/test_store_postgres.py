"""The PostgreSQL store on a real server (tests/postgres.py): migrations from an empty database
and from every earlier version, each named query, idempotent event inserts, the password from the
URL or PGPASSWORD, and the CLI against it."""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import asyncpg
import orjson
import pytest

from antex import store
from antex.credits import Usage
from antex.ledger import Charge
from antex.store import postgres
from antex.store.migrations import POSTGRES, migrations
from tests.postgres import PASSWORD, PostgresServer
from tests.test_cli import KEY_PATTERN, antex, write_config


async def tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        return {r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    finally:
        await conn.close()


async def test_an_empty_database_migrates_to_the_latest_version(empty_postgres_url: str) -> None:
    assert await tables(empty_postgres_url) == set()
    opened = await store.open_store(empty_postgres_url)
    try:
        assert await opened.schema_version() == migrations(POSTGRES)[-1][0]
    finally:
        await opened.close()
    assert {"keys", "events", "key_ips", "meta", "migrations", "daily_usage"} <= await tables(empty_postgres_url)


@pytest.mark.parametrize("version", [number for number, _, _ in migrations(POSTGRES)])
async def test_every_earlier_version_migrates_forward(empty_postgres_url: str, version: int) -> None:
    """A database left at each version (its sections applied by hand) is brought up to the latest."""
    conn = await asyncpg.connect(empty_postgres_url)
    try:
        for number, name, sql in migrations(POSTGRES):
            if number > version:
                break
            await conn.execute(sql)
            await conn.execute("INSERT INTO migrations VALUES ($1, $2, 0)", number, name)
        assert await postgres.migrate(conn) == migrations(POSTGRES)[-1][0]
        assert [r[0] for r in await conn.fetch("SELECT version FROM migrations ORDER BY version")] == [
            number for number, _, _ in migrations(POSTGRES)]
    finally:
        await conn.close()


async def test_instances_starting_together_migrate_once(empty_postgres_url: str) -> None:
    opened = await asyncio.gather(*(store.open_store(empty_postgres_url, pool_size=1) for _ in range(4)))
    for each in opened:
        await each.close()
    conn = await asyncpg.connect(empty_postgres_url)
    try:
        assert await conn.fetchval("SELECT COUNT(*) FROM migrations") == len(migrations(POSTGRES))
    finally:
        await conn.close()


def test_postgres_migrations_are_numbered_in_order() -> None:
    numbers = [number for number, _, _ in migrations(POSTGRES)]
    assert numbers == list(range(1, len(numbers) + 1))


def charge(key_id: int, ts: float, micro: int) -> tuple:
    return Charge(key_id, ts, "claude-sonnet-4-6", "/v1/messages", Usage(input_tokens=10, output_tokens=5), micro,
                  "req_1", "complete").row()


async def test_the_named_queries(postgres_url: str) -> None:
    s = await store.open_store(postgres_url)
    try:
        version = await s.keys_version()
        key_id = await s.insert_key("alice", "sk_live_AbCd", "hash-a", "pro", 1000.0)
        assert await s.keys_version() == version + 1  # the trigger: how instances notice the CLI
        assert [r.name for r in await s.find_keys("alice")] == ["alice"]
        assert [r.id for r in await s.find_keys(str(key_id))] == [key_id]
        assert [r.name for r in await s.find_keys("sk_live_AbCd…")] == ["alice"]
        assert await s.find_keys("99999999999999999999") == []  # not an id: too large, never an error
        assert await s.prefix_taken("sk_live_AbCd")
        await s.update_key(key_id, 1001.0, status="quarantined", status_reason="test", limits={"max_ips": 2})
        (row,) = await s.all_keys()
        assert (row.status, row.status_reason, row.limits) == ("quarantined", "test", {"max_ips": 2})

        now = time.time()
        rows = [charge(key_id, now - 10, 100), charge(key_id, now - 5, 200)]
        assert await s.insert_events(rows, ["a/1", "a/2"]) == 2
        assert await s.insert_events(rows, ["a/1", "a/2"]) == 0  # the same requests again: nothing new
        assert await s.charges_since(key_id, now - 60) == [(now - 10, 100), (now - 5, 200)]
        chunks = [chunk async for chunk in s.charge_chunks(key_id, now - 60, rows=1)]
        assert chunks == [[(now - 10, 100)], [(now - 5, 200)]]
        assert await s.activity(key_id, now - 60) == [("claude-sonnet-4-6", 2, 300)]
        events = [e async for e in s.iter_events(None, None)]
        assert [(e["key_name"], e["micro_credits"], e["requests"]) for e in events] == [("alice", 100, 1), ("alice", 200, 1)]
        await s.upsert_ips([(key_id, "203.0.113.7", now - 3), (key_id, "203.0.113.7", now - 30)])
        assert await s.ips_since(key_id, now - 60) == [("203.0.113.7", now - 3)]  # the latest sighting wins
        assert await s.last_settled() == [] and await s.inflight() == []
    finally:
        await s.close()


async def test_the_writer_inserts_each_request_once_and_rolls_up_days(postgres_url: str) -> None:
    s = await store.open_store(postgres_url)
    writer = await store.open_writer(postgres_url, "web-1")
    try:
        key_id = await s.insert_key("bob", "sk_live_BbBb", "hash-b", "pro", 1.0)
        now = time.time()
        rows = [charge(key_id, now - 9 * 86400, 100), charge(key_id, now - 1, 50)]
        for _ in range(2):  # a batch written again after a lost answer to its commit
            await writer.write(rows, ["web-1/x-1", "web-1/x-2"], [], [(key_id, "10.0.0.1", now)],
                               [(writer.QUARANTINE, ("automatic", now, key_id))], [])
        assert len([e async for e in s.iter_events(key_id, None)]) == 2
        (row,) = await s.all_keys()
        assert row.status == "quarantined"
        rolled, forgotten = await store.prune(writer, now, 8 * 86400, 24 * 3600)
        assert (rolled, forgotten) == (1, 0)
        events = [e async for e in s.iter_events(key_id, None)]
        assert [(e["outcome"], e["micro_credits"]) for e in events] == [("daily_total", 100), ("complete", 50)]
    finally:
        await writer.close()
        await s.close()


async def test_the_password_comes_from_the_url_or_pgpassword(postgres_server: PostgresServer, postgres_url: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    without = postgres_url.replace(f":{PASSWORD}@", "@")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await store.open_store(without)
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    opened = await store.open_store(without)
    await opened.close()


def test_the_cli_works_against_postgresql(tmp_path: Path, postgres_url: str) -> None:
    cfg = write_config(tmp_path / "antex.toml", postgres_url)
    init = antex(cfg, "init").output
    assert "schema version" in init and PASSWORD not in init  # a URL is shown without its password
    created = antex(cfg, "keys", "create", "carol", "--plan", "pro").output
    assert KEY_PATTERN.search(created)
    assert "carol" in antex(cfg, "keys", "list").output
    antex(cfg, "keys", "revoke", "carol")
    assert json.loads(antex(cfg, "keys", "list", "--json").output)["status"] == "revoked"
    antex(cfg, "keys", "create", "dave", "--plan", "pro")
    body = orjson.loads(antex(cfg, "usage", "dave", "--json").output)
    assert body["key"]["name"] == "dave" and body["five_hour"]["used_percent"] == 0
    assert antex(cfg, "events").output.startswith("id,time,key_name")


def test_a_wrong_password_is_a_clean_error(tmp_path: Path, postgres_url: str) -> None:
    cfg = write_config(tmp_path / "antex.toml", postgres_url.replace(PASSWORD, "wrong"))
    output = antex(cfg, "keys", "list", code=1).stderr
    assert "Cannot open the database" in output and "wrong" not in output


def test_import_copies_an_sqlite_database_once(tmp_path: Path, postgres_url: str) -> None:
    sqlite_cfg = write_config(tmp_path / "single.toml", tmp_path / "single.db")
    key = KEY_PATTERN.search(antex(sqlite_cfg, "keys", "create", "erin", "--plan", "pro").output).group()
    antex(sqlite_cfg, "keys", "create", "frank", "--plan", "pro")
    antex(sqlite_cfg, "keys", "quarantine", "frank", "--reason", "leaked")
    now = time.time()

    async def history() -> None:
        s = store.SqliteStore(await store.connect(str(tmp_path / "single.db")))
        try:
            await s.insert_events([charge(1, now - 3600, 400_000), charge(1, now - 60, 500_000),
                                   charge(1, now - 20 * 86400, 7)])
            await s.upsert_ips([(1, "203.0.113.9", now - 10)])
        finally:
            await s.close()

    asyncio.run(history())
    single_usage = orjson.loads(antex(sqlite_cfg, "usage", "erin", "--json").output)

    cfg = write_config(tmp_path / "shared.toml", postgres_url)
    first = antex(cfg, "import", str(tmp_path / "single.db")).output
    assert "2 keys, 3 credit events" in first and "1 client IPs" in first
    again = antex(cfg, "import", str(tmp_path / "single.db")).output
    assert "0 keys, 0 credit events, 0 daily totals, 0 client IPs" in again
    exported = [orjson.loads(line) for line in antex(cfg, "events", "--json").output.splitlines()]
    assert sorted(e["credits"] for e in exported) == [7e-6, 0.4, 0.5] and {e["key_name"] for e in exported} == {"erin"}
    shared_usage = orjson.loads(antex(cfg, "usage", "erin", "--json").output)
    assert shared_usage["five_hour"]["used_percent"] == single_usage["five_hour"]["used_percent"] > 0
    listed = [json.loads(line) for line in antex(cfg, "keys", "list", "--json").output.splitlines()]
    assert [(k["name"], k["status"]) for k in listed] == [("erin", "active"), ("frank", "quarantined")]
    # the key works there as it did (same hash), and new keys get fresh ids after the imported ones
    created = json.loads(antex(cfg, "keys", "create", "gus", "--plan", "pro", "--json").output)
    assert created["id"] == 3 and key.startswith(listed[0]["prefix"])


def test_import_refuses_a_target_holding_other_keys(tmp_path: Path, postgres_url: str) -> None:
    sqlite_cfg = write_config(tmp_path / "single.toml", tmp_path / "single.db")
    antex(sqlite_cfg, "keys", "create", "erin", "--plan", "pro")
    cfg = write_config(tmp_path / "shared.toml", postgres_url)
    antex(cfg, "keys", "create", "someone-else", "--plan", "pro")
    message = antex(cfg, "import", str(tmp_path / "single.db"), code=1).stderr
    assert "already a different key" in message
    antex(write_config(tmp_path / "s.toml", tmp_path / "other.db"), "import", str(tmp_path / "single.db"), code=1)


async def test_instances_pruning_at_once_count_each_day_once(postgres_url: str) -> None:
    s = await store.open_store(postgres_url)
    writers = [await store.open_writer(postgres_url, f"web-{n}") for n in range(4)]
    try:
        key_id = await s.insert_key("bob", "sk_live_BbBb", "hash-b", "pro", 1.0)
        now = time.time()
        midday = (now - 20 * 86400) // 86400 * 86400 + 43200  # one UTC day, whatever the time now
        rows = [charge(key_id, midday + n, 10) for n in range(500)]
        await s.insert_events(rows, [f"x/{n}" for n in range(500)])
        done = await asyncio.gather(*(store.prune(writer, now, 8 * 86400, 86400) for writer in writers))
        assert sum(rolled for rolled, _ in done) == 500
        (total,) = [e async for e in s.iter_events(key_id, None)]
        assert (total["outcome"], total["requests"], total["micro_credits"]) == ("daily_total", 500, 5000)
    finally:
        for writer in writers:
            await writer.close()
        await s.close()
