"""The schema: migrations from a blank database, idempotence, and packaging of schema.sql."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

from antex import store
from tests.conftest import ROOT


async def test_blank_database_migrates_to_the_latest_version(tmp_path: Path) -> None:
    path = str(tmp_path / "new.db")
    conn = await store.connect(path)
    await conn.close()
    latest = store.migrations()[-1][0]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == latest
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"keys", "events", "key_ips", "meta", "migrations"} <= tables
    assert [row[0] for row in db.execute("SELECT version FROM migrations ORDER BY version")] == [
        number for number, _, _ in store.migrations()]
    # The keys_version counter moves with every change to keys, which is how servers notice the CLI.
    db.execute("INSERT INTO keys (name, prefix, hash, plan, created_at, updated_at) VALUES ('a', 'p', 'h', 'pro', 0, 0)")
    db.execute("UPDATE keys SET status = 'revoked'")
    db.commit()
    assert db.execute("SELECT value FROM meta WHERE name = 'keys_version'").fetchone()[0] == 2


async def test_migrating_twice_changes_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "twice.db")
    for _ in range(2):
        conn = await store.connect(path)
        await conn.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM migrations").fetchone()[0] == len(store.migrations())


def test_migrations_are_numbered_in_order() -> None:
    numbers = [number for number, _, _ in store.migrations()]
    assert numbers == list(range(1, len(numbers) + 1))


def test_wheel_ships_the_one_schema_and_the_documented_defaults(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("antex-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("antex/schema.sql") == (ROOT / "schema.sql").read_bytes()
        assert archive.read("antex/schema-postgres.sql") == (ROOT / "schema-postgres.sql").read_bytes()
        assert archive.read("antex/config.example.toml") == (ROOT / "config.example.toml").read_bytes()
        assert "antex/static/index.html" in archive.namelist()
