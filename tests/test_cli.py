"""The `antex` command: in process through click's CliRunner, then as real processes beside a
running `antex serve`, the way an operator uses it (CLI changes reach the server within a second).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import math
import os
import pty
import re
import select
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from aiohttp import ClientSession
from click.testing import CliRunner, Result

from antex import config as config_module, store
from antex.cli import cli
from antex.credits import MICRO, Usage, micro_credits, to_micro
from antex.ledger import Charge
from antex.terminal import bar, render_table, render_usage
from tests.conftest import ROOT, Gateway
from tests.processes import clean_env, free_port, stop, wait_for
from tests.fake_anthropic import DEFAULT_API_KEY

KEY_PATTERN = re.compile(r"sk_live_[A-Za-z0-9]{43}")
EVENT_COLUMNS = ["id", "time", "key_name", "key_id", "model", "endpoint", "input_tokens", "output_tokens",
                 "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens", "web_search_requests",
                 "web_fetch_requests", "credits", "request_id", "outcome", "upstream", "requests"]
DEFAULTS = config_module.load(None)
HOUR = 3600
DAY = 86400


# helpers: config files, the CLI in process, the database seen with stdlib sqlite3


def write_config(path: Path, database: Path | str, extra: str = "") -> Path:
    path.write_text(f"[server]\ndatabase = {json.dumps(str(database))}\n{extra}", encoding="utf-8")
    return path


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    """A config file whose database lives in tmp_path."""
    return write_config(tmp_path / "antex.toml", tmp_path / "antex.db")


def antex(cfg: Path | None, *args: str, code: int = 0, env: dict[str, str] | None = None) -> Result:
    """Run the CLI in process; a failure must be a clean message, never a traceback."""
    argv = (["--config", str(cfg)] if cfg else []) + list(args)
    result = CliRunner().invoke(cli, argv, env=env)
    assert result.exit_code == code, (result.output, result.exception)
    if code:
        assert isinstance(result.exception, SystemExit), result.exception
        assert "Traceback" not in result.output
        assert "Error:" in result.stderr
    return result


def database(cfg: Path) -> Path:
    return Path(config_module.load(cfg).server.database)


def rows(cfg: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(database(cfg))
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def key_row(cfg: Path, name: str) -> dict[str, Any]:
    conn = sqlite3.connect(database(cfg))
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM keys WHERE name = ?", (name,)).fetchone()
    finally:
        conn.close()
    assert row is not None, name
    found = dict(row)
    found["limits"] = orjson.loads(found["limits"])
    return found


def create(cfg: Path, name: str, plan: str = "pro") -> dict[str, Any]:
    """`keys create NAME --plan P --json`, parsed."""
    return orjson.loads(antex(cfg, "keys", "create", name, "--plan", plan, "--json").stdout)


def charge(key_id: int, ts: float, credits: float, model: str = "claude-haiku-4-5",
           endpoint: str = "/v1/messages") -> Charge:
    """A settled request worth exactly `credits` (haiku input is 100 credits per million tokens)."""
    model_cfg = DEFAULTS.models[model]
    usage = Usage(input_tokens=round(credits * MICRO / model_cfg.rates.input))
    micro = micro_credits(usage, model_cfg.rates)
    assert micro == to_micro(credits)
    return Charge(key_id, ts, model, endpoint, usage, micro, f"req_{key_id}_{int(ts)}", "complete")


async def add_charges(path: str | Path, charges: list[Charge]) -> None:
    conn = await store.connect(str(path))
    try:
        await store.SqliteStore(conn).insert_events([c.row() for c in charges])
    finally:
        await conn.close()


def clock_text(ts: float, now: float) -> str:
    """A time less than a day ahead as the terminal shows it (local time): HH:MM when it is
    today, with its weekday when it falls after midnight."""
    moment = datetime.fromtimestamp(ts).astimezone()
    today = datetime.fromtimestamp(now).astimezone().date() == moment.date()
    return moment.strftime("%H:%M" if today else "%a %H:%M")


def week_text(ts: float, now: float) -> str:
    """A time 6 to 7 days ahead: its weekday, or its date when that weekday is today's."""
    moment = datetime.fromtimestamp(ts).astimezone()
    days = (moment.date() - datetime.fromtimestamp(now).astimezone().date()).days
    return moment.strftime("%a %H:%M" if days < 7 else "%Y-%m-%d %H:%M")


# init


def test_init_creates_the_database_at_the_latest_schema_version(cfg: Path) -> None:
    result = antex(cfg, "init")
    latest = store.migrations()[-1][0]
    assert f"schema version {latest}" in result.output
    assert rows(cfg, "PRAGMA user_version") == [(latest,)]
    assert [r[0] for r in rows(cfg, "SELECT version FROM migrations ORDER BY version")] == [
        number for number, _, _ in store.migrations()]
    assert rows(cfg, "PRAGMA journal_mode") == [("wal",)]
    tables = {r[0] for r in rows(cfg, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"keys", "events", "key_ips", "meta", "migrations"} <= tables
    # Running it again is harmless.
    assert f"schema version {latest}" in antex(cfg, "init").output


def test_init_without_a_config_uses_antex_db_in_the_working_directory(tmp_path: Path) -> None:
    antex(None, "init")
    assert (tmp_path / "antex.db").exists()


def test_init_write_config_writes_a_file_that_loads(cfg: Path, tmp_path: Path) -> None:
    written = tmp_path / "starter.toml"
    result = antex(cfg, "init", "--write-config", str(written))
    assert f"Wrote {written}" in result.output
    loaded = config_module.load(written)
    assert loaded.plans == DEFAULTS.plans and loaded.models.keys() == DEFAULTS.models.keys()
    assert "pro" in antex(written, "plans").output
    before = written.read_text()
    again = antex(cfg, "init", "--write-config", str(written), code=1)
    assert "already exists" in again.stderr
    assert written.read_text() == before


# keys create / list


def test_keys_create_json_prints_the_key_once(cfg: Path) -> None:
    result = antex(cfg, "keys", "create", "alice", "--plan", "pro", "--json")
    created = orjson.loads(result.stdout)
    assert list(created) == ["id", "name", "plan", "prefix", "key"]
    assert created["name"] == "alice" and created["plan"] == "pro" and isinstance(created["id"], int)
    assert KEY_PATTERN.fullmatch(created["key"])
    assert created["prefix"] == created["key"][:12]
    assert result.stdout.count("\n") == 1


def test_keys_create_text_shows_the_key_and_says_so_once(cfg: Path) -> None:
    result = antex(cfg, "keys", "create", "bob", "--plan", "starter")
    keys = KEY_PATTERN.findall(result.output)
    assert len(keys) == 1
    assert "shown only once" in result.output and "plan starter" in result.output


def test_database_stores_only_the_hash_and_prefix(cfg: Path, tmp_path: Path) -> None:
    created = create(cfg, "alice")
    key = created["key"]
    secret = key[len(created["prefix"]):]
    stored = key_row(cfg, "alice")
    assert stored["hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert stored["prefix"] == key[:12]
    tables = [r[0] for r in rows(cfg, "SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        for row in rows(cfg, f"SELECT * FROM {table}"):
            for value in row:
                assert key not in str(value) and secret not in str(value), table
    for path in tmp_path.glob("antex.db*"):
        assert secret.encode() not in path.read_bytes(), path


def test_keys_list_never_shows_a_full_key(cfg: Path) -> None:
    alice, bob = create(cfg, "alice"), create(cfg, "bob", "max")
    antex(cfg, "keys", "quarantine", "bob", "--reason", "shared in a chat")
    text = antex(cfg, "keys", "list").output
    listed = antex(cfg, "keys", "list", "--json").stdout
    for output in (text, listed):
        assert not KEY_PATTERN.search(output)
        for created in (alice, bob):
            assert created["key"][12:] not in output
    assert alice["prefix"] + "…" in text and "quarantined (shared in a chat)" in text
    objects = [orjson.loads(line) for line in listed.splitlines()]
    assert [(o["name"], o["prefix"], o["plan"], o["status"], o["status_reason"]) for o in objects] == [
        ("alice", alice["prefix"], "pro", "active", None),
        ("bob", bob["prefix"], "max", "quarantined", "shared in a chat"),
    ]
    assert all("key" not in o and "hash" not in o for o in objects)


def test_keys_list_when_empty_says_how_to_start(cfg: Path) -> None:
    assert "antex keys create" in antex(cfg, "keys", "list").output
    assert antex(cfg, "keys", "list", "--json").stdout == ""


def test_keys_create_refuses_an_unknown_plan_and_a_taken_name(cfg: Path) -> None:
    result = antex(cfg, "keys", "create", "carol", "--plan", "gold", code=1)
    assert "No plan 'gold'" in result.stderr and "starter, pro, max" in result.stderr
    create(cfg, "carol")
    assert "already exists" in antex(cfg, "keys", "create", "carol", "--plan", "pro", code=1).stderr
    assert rows(cfg, "SELECT COUNT(*) FROM keys") == [(1,)]


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "7", "sk_live_AbCd"])
def test_keys_create_refuses_names_that_are_blank_too_long_or_look_like_refs(cfg: Path, name: str) -> None:
    antex(cfg, "init")
    antex(cfg, "keys", "create", name, "--plan", "pro", code=1)
    assert rows(cfg, "SELECT COUNT(*) FROM keys") == [(0,)]


# revoke / quarantine / release / set, by name, id or visible prefix


def ref_for(kind: str, created: dict[str, Any]) -> str:
    return {"name": created["name"], "id": str(created["id"]), "prefix": created["prefix"],
            "prefix…": created["prefix"] + "…"}[kind]


@pytest.mark.parametrize("kind", ["name", "id", "prefix", "prefix…"])
def test_quarantine_release_revoke_by_any_ref(cfg: Path, kind: str) -> None:
    create(cfg, "decoy")
    created = create(cfg, "alice")
    ref = ref_for(kind, created)

    result = antex(cfg, "keys", "quarantine", ref, "--reason", "seen from 40 IPs")
    assert "'alice'" in result.output and "quarantined" in result.output
    stored = key_row(cfg, "alice")
    assert (stored["status"], stored["status_reason"]) == ("quarantined", "seen from 40 IPs")

    assert "released" in antex(cfg, "keys", "release", ref).output
    assert (key_row(cfg, "alice")["status"], key_row(cfg, "alice")["status_reason"]) == ("active", None)

    assert "revoked" in antex(cfg, "keys", "revoke", ref).output
    assert key_row(cfg, "alice")["status"] == "revoked"
    assert key_row(cfg, "decoy")["status"] == "active"

    refused = antex(cfg, "keys", "release", ref, code=1)
    assert "revoked" in refused.stderr
    refused = antex(cfg, "keys", "quarantine", ref, "--reason", "x", code=1)
    assert "revoked" in refused.stderr
    assert key_row(cfg, "alice")["status"] == "revoked"


def test_quarantine_needs_a_reason(cfg: Path) -> None:
    create(cfg, "alice")
    result = antex(cfg, "keys", "quarantine", "alice", code=2)
    assert "--reason" in result.stderr


@pytest.mark.parametrize("kind", ["name", "id", "prefix"])
def test_keys_set_plan_limits_models_and_clear(cfg: Path, kind: str) -> None:
    created = create(cfg, "alice", "starter")
    ref = ref_for(kind, created)
    result = antex(cfg, "keys", "set", ref, "--plan", "max", "--credits-5h", "50",
                   "--models", "claude-haiku-*, claude-sonnet-*")
    stored = key_row(cfg, "alice")
    assert stored["plan"] == "max"
    assert stored["limits"] == {"credits_5h": 50.0, "models": ["claude-haiku-*", "claude-sonnet-*"]}
    assert "plan max" in result.output and "50 credits / 5 h" in result.output
    assert "100000 credits / 7 d" in result.output  # the rest is still the plan's

    result = antex(cfg, "keys", "set", ref, "--max-tokens", "1000", "--max-tokens-over", "refuse")
    assert key_row(cfg, "alice")["limits"] == {"credits_5h": 50.0, "models": ["claude-haiku-*", "claude-sonnet-*"],
                                               "max_tokens": 1000, "max_tokens_over": "refuse"}
    assert "max_tokens 1000 (larger requests refused)" in result.output
    result = antex(cfg, "keys", "set", ref, "--clear")
    assert key_row(cfg, "alice")["limits"] == {}
    assert "10000 credits / 5 h" in result.output and "max_tokens 128000" in result.output
    assert key_row(cfg, "alice")["plan"] == "max"


def test_keys_set_refuses_nonsense(cfg: Path) -> None:
    create(cfg, "alice")
    assert "Nothing to change" in antex(cfg, "keys", "set", "alice", code=1).stderr
    assert "No plan 'gold'" in antex(cfg, "keys", "set", "alice", "--plan", "gold", code=1).stderr
    assert "Invalid value" in antex(cfg, "keys", "set", "alice", "--credits-5h", "0", code=2).stderr
    assert "Invalid value" in antex(cfg, "keys", "set", "alice", "--credits-5h", "lots", code=2).stderr
    assert key_row(cfg, "alice")["limits"] == {} and key_row(cfg, "alice")["plan"] == "pro"


@pytest.mark.parametrize("command", [
    ["keys", "revoke"], ["keys", "release"], ["keys", "quarantine", "--reason", "r"],
    ["keys", "set", "--plan", "max"], ["usage"], ["events", "--key"],
])
def test_unknown_and_ambiguous_refs_are_clean_errors(cfg: Path, command: list[str]) -> None:
    create(cfg, "alice")
    # Two keys with one visible prefix (the CLI avoids it; an old database may have it).
    conn = sqlite3.connect(database(cfg))
    with conn:
        for name, key_hash in (("twin1", "a" * 64), ("twin2", "b" * 64)):
            conn.execute("INSERT INTO keys (name, prefix, hash, plan, created_at, updated_at) "
                         "VALUES (?, 'sk_live_Twin', ?, 'pro', 0, 0)", (name, key_hash))
    conn.close()

    for ref, says in (("nobody", "No key named 'nobody'"), ("999", "No key named '999'"),
                      ("sk_live_Zzzz", "No key named 'sk_live_Zzzz'"), ("sk_live_Twin", "names 2 keys")):
        args = command[:2] + [ref] + command[2:] if command[0] == "keys" else command + [ref]
        result = antex(cfg, *args, code=1)
        assert says in result.stderr, (args, result.stderr)
    assert {key_row(cfg, n)["status"] for n in ("alice", "twin1", "twin2")} == {"active"}
    assert key_row(cfg, "alice")["plan"] == "pro"


# plans and models


def test_plans_text_and_json(cfg: Path) -> None:
    text = antex(cfg, "plans").output
    assert text.splitlines()[0].startswith("starter: 500 credits / 5 h, 5000 credits / 7 d")
    assert "pro: 2000 credits / 5 h" in text and "max: 10000 credits / 5 h" in text
    assert "max_ips 3" in text and "max_concurrent 4" in text
    # How far past 100 % each plan can go: pro allows Opus (the first at 2500 credits/MTok of output).
    assert ("  past 100 %: at most 8 requests in flight, each up to 160 credits of output "
            "(64000 tokens of claude-opus-4-5) plus its input: 1280 credits, 64 % of the 5-hour window, "
            "before input") in text.splitlines()
    assert "no concurrency cap" not in text
    # max's cap (128000) is over Opus 4.5's own limit (64000): the bound is Opus 4.6's
    assert "each up to 320 credits of output (128000 tokens of claude-opus-4-6)" in text
    assert "max_tokens 32000 (larger requests lowered to it)" in text
    plans = orjson.loads(antex(cfg, "plans", "--json").stdout)
    assert plans["pro"] == {"credits_5h": 2000.0, "credits_7d": 20000.0, "models": ["claude-*"],
                            "max_tokens": 64000, "max_ips": 5, "max_concurrent": 8, "max_tokens_over": "lower"}
    assert list(plans) == ["starter", "pro", "max"]


def test_plans_from_the_config_file(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "antex.toml", tmp_path / "antex.db",
                       '[plans.team]\ncredits_5h = 7\ncredits_7d = 70\nmodels = ["claude-haiku-*"]\n'
                       "max_tokens = 100\nmax_ips = 0\nmax_concurrent = 0\n")
    assert "team: 7 credits / 5 h, 70 credits / 7 d, models claude-haiku-*, max_tokens 100 (larger requests lowered to it), " \
           "max_ips unlimited, max_concurrent unlimited" in antex(cfg, "plans").output
    assert "  no concurrency cap: nothing bounds how far requests in flight when a window fills take a key " \
           "past 100 % (set max_concurrent)" in antex(cfg, "plans").output.splitlines()
    assert create(cfg, "t", "team")["plan"] == "team"


def test_models_text_and_json(cfg: Path) -> None:
    text = antex(cfg, "models").output
    assert "claude-sonnet-4-6" in text and "(aliases: sonnet), max output 128000 tokens" in text
    assert "credits/MTok: input 300, output 1500, cache write 5m 375, 1h 600, cache read 30" in text
    assert "credits/use: web search 1, web fetch 0" in text
    models = orjson.loads(antex(cfg, "models", "--json").stdout)
    by_id = {m["id"]: m for m in models}
    assert by_id.keys() == DEFAULTS.models.keys()
    assert by_id["claude-opus-4-6"]["tier"] == "opus" and by_id["claude-opus-4-6"]["aliases"] == ["opus"]
    assert by_id["claude-haiku-4-5"]["max_output_tokens"] == 64000
    assert by_id["claude-haiku-4-5"]["rates"] == {"input": 100.0, "output": 500.0, "cache_write_5m": 125.0,
                                                  "cache_write_1h": 200.0, "cache_read": 10.0, "web_search": 1.0,
                                                  "web_fetch": 0.0}


# events


@pytest.fixture
def with_events(cfg: Path) -> dict[str, Any]:
    """Two keys and four events: 3 days, 36 hours and 1 hour ago (alice), 10 minutes ago (bob)."""
    alice, bob = create(cfg, "alice"), create(cfg, "bob")
    now = time.time()
    sonnet = DEFAULTS.models["claude-sonnet-4-6"].rates
    usage = Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=50)
    charges = [
        charge(alice["id"], now - 3 * DAY, 10),
        charge(alice["id"], now - 36 * HOUR, 2.5),
        Charge(alice["id"], now - HOUR, "claude-sonnet-4-6", "/v1/chat/completions", usage,
               micro_credits(usage, sonnet), None, "client_disconnected"),
        charge(bob["id"], now - 600, 1),
    ]
    asyncio.run(add_charges(database(cfg), charges))
    return {"alice": alice, "bob": bob, "now": now, "charges": charges}


def csv_rows(output: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(output))
    assert reader.fieldnames == EVENT_COLUMNS
    return list(reader)


def test_events_csv_has_every_event_oldest_first(cfg: Path, with_events: dict[str, Any]) -> None:
    exported = csv_rows(antex(cfg, "events").stdout)
    assert [(r["key_name"], float(r["credits"])) for r in exported] == [
        ("alice", 10.0), ("alice", 2.5), ("alice", 0.6015), ("bob", 1.0)]
    third = exported[2]
    assert (third["model"], third["endpoint"], third["input_tokens"], third["output_tokens"],
            third["cache_read_tokens"], third["request_id"], third["outcome"]) == (
        "claude-sonnet-4-6", "/v1/chat/completions", "1000", "200", "50", "", "client_disconnected")
    for row, event in zip(exported, with_events["charges"]):
        assert abs(datetime.fromisoformat(row["time"]).timestamp() - event.ts) < 0.001
        assert row["key_id"] == str(event.key_id)


def test_events_filtered_by_key_and_since(cfg: Path, with_events: dict[str, Any]) -> None:
    def names_and_credits(*args: str) -> list[tuple[str, float]]:
        return [(r["key_name"], float(r["credits"])) for r in csv_rows(antex(cfg, "events", *args).stdout)]

    alice = with_events["alice"]
    assert names_and_credits("--key", "alice") == [("alice", 10.0), ("alice", 2.5), ("alice", 0.6015)]
    assert names_and_credits("--key", alice["prefix"]) == names_and_credits("--key", str(alice["id"]))
    assert names_and_credits("--key", "bob") == [("bob", 1.0)]
    assert names_and_credits("--since", "24h") == [("alice", 0.6015), ("bob", 1.0)]
    assert names_and_credits("--since", "30m") == [("bob", 1.0)]
    assert names_and_credits("--since", "2d", "--key", "alice") == [("alice", 2.5), ("alice", 0.6015)]
    two_days_ago = datetime.fromtimestamp(with_events["now"] - 2 * DAY, timezone.utc)
    # An ISO date is midnight UTC: after the 3-day-old event, before the 36-hour-old one.
    assert names_and_credits("--since", two_days_ago.date().isoformat()) == [
        ("alice", 2.5), ("alice", 0.6015), ("bob", 1.0)]
    moment = datetime.fromtimestamp(with_events["now"] - 2 * HOUR, timezone.utc).isoformat(timespec="seconds")
    assert names_and_credits("--since", moment) == [("alice", 0.6015), ("bob", 1.0)]
    assert names_and_credits("--since", str(int(with_events["now"] - 2 * HOUR))) == [("alice", 0.6015), ("bob", 1.0)]
    assert names_and_credits("--since", "1h", "--key", "alice") == []


def test_events_json_lines(cfg: Path, with_events: dict[str, Any]) -> None:
    lines = antex(cfg, "events", "--json", "--key", "alice", "--since", "24h").stdout.splitlines()
    assert len(lines) == 1
    event = orjson.loads(lines[0])
    assert list(event) == EVENT_COLUMNS
    assert event["credits"] == 0.6015 and event["output_tokens"] == 200 and event["request_id"] is None
    assert event["key_name"] == "alice" and event["key_id"] == with_events["alice"]["id"]
    everything = antex(cfg, "events", "--json").stdout.splitlines()
    assert [orjson.loads(line)["credits"] for line in everything] == [10.0, 2.5, 0.6015, 1.0]


def test_events_bad_since_is_a_usage_error(cfg: Path, with_events: dict[str, Any]) -> None:
    result = antex(cfg, "events", "--since", "last tuesday", code=2)
    assert "'last tuesday'" in result.stderr and "24h" in result.stderr


# usage, in process


@pytest.fixture
def with_usage(cfg: Path) -> dict[str, Any]:
    """dana: 50 % of her 5-hour window; erin: 120 % of an overridden 100-credit 5-hour window;
    gone: revoked. Charge times sit 30 s off whole minutes, so the waits read the same for 30 s."""
    now = time.time()
    dana, erin, gone = create(cfg, "dana"), create(cfg, "erin"), create(cfg, "gone")
    antex(cfg, "keys", "set", "erin", "--credits-5h", "100")
    antex(cfg, "keys", "revoke", "gone")
    charges = [
        charge(dana["id"], now - HOUR + 30, 500), charge(dana["id"], now - 600, 500),
        charge(erin["id"], now - 3 * HOUR + 30, 60), charge(erin["id"], now - HOUR, 60),
        charge(dana["id"], now - 8 * DAY, 5000),  # out of both windows
    ]
    asyncio.run(add_charges(database(cfg), charges))
    return {"now": now, "dana": dana, "erin": erin, "gone": gone,
            "dana_release": math.ceil(now - HOUR + 30 + 5 * HOUR),
            "dana_weekly_release": math.ceil(now - HOUR + 30 + 7 * DAY),
            "erin_available": math.ceil(now - 3 * HOUR + 30 + 5 * HOUR)}


def test_usage_of_one_key_draws_bars_and_next_release(cfg: Path, with_usage: dict[str, Any]) -> None:
    output = antex(cfg, "usage", "dana").output
    assert "\x1b" not in output  # CliRunner is not a terminal: no colour
    heading, five_hour, weekly = output.splitlines()
    assert heading == f"dana  {with_usage['dana']['prefix']}…  plan pro  (ok)"
    assert five_hour.startswith("  5-hour  " + "█" * 12 + "░" * 12 + "   50.0%  next release at ")
    assert five_hour.endswith(f" at {clock_text(with_usage['dana_release'], with_usage['now'])} (in 4h 0m)")
    weekly_at = week_text(with_usage["dana_weekly_release"], time.time())
    assert weekly == "  weekly  " + "█" + "░" * 23 + f"    5.0%  next release at {weekly_at} (in 6d 23h)"


def test_usage_of_a_full_key_says_when_it_is_available_again(cfg: Path, with_usage: dict[str, Any]) -> None:
    output = antex(cfg, "usage", with_usage["erin"]["prefix"]).output
    heading, five_hour, weekly = output.splitlines()
    assert heading.startswith("erin  ") and heading.endswith("(full)")
    assert five_hour.startswith("  5-hour  " + "█" * 24 + "  120.0%  full: available again at ")
    assert five_hour.endswith(f" at {clock_text(with_usage['erin_available'], with_usage['now'])} (in 2h 0m)")
    assert "    0.6%  next release at " in weekly


def test_usage_table_of_every_live_key(cfg: Path, with_usage: dict[str, Any]) -> None:
    output = antex(cfg, "usage").output
    assert "\x1b" not in output
    header, dana, erin = output.splitlines()
    assert header.split() == ["KEY", "PREFIX", "PLAN", "5-HOUR", "WEEKLY", "FREES", "UP"]
    assert dana.startswith(f"dana  {with_usage['dana']['prefix']}… pro      ")
    assert "█" * 6 + "░" * 6 + "  50.0%" in dana and "█" + "░" * 11 + "   5.0%" in dana
    assert dana.endswith(f"next release {clock_text(with_usage['dana_release'], with_usage['now'])} (in 4h 0m)")
    assert "█" * 12 + " 120.0%" in erin
    assert erin.endswith(f"available {clock_text(with_usage['erin_available'], with_usage['now'])} (in 2h 0m)")
    assert "gone" not in output


def test_usage_json_of_every_key_and_of_one(cfg: Path, with_usage: dict[str, Any]) -> None:
    bodies = [orjson.loads(line) for line in antex(cfg, "usage", "--json").stdout.splitlines()]
    assert [b["key"]["name"] for b in bodies] == ["dana", "erin"]
    (erin,) = [orjson.loads(line) for line in antex(cfg, "usage", "--json", "erin").stdout.splitlines()]
    assert erin == bodies[1] | {"now": erin["now"]}
    assert erin["status"] == "rejected"
    assert erin["five_hour"]["used_percent"] == 120.0
    assert erin["five_hour"]["available_at"] == with_usage["erin_available"]
    assert erin["seven_day"]["used_percent"] == 0.6 and erin["seven_day"]["available_at"] is None
    assert not any(word in orjson.dumps(erin).decode() for word in ("credit", "micro"))


def test_usage_with_no_keys_and_with_a_revoked_key(cfg: Path) -> None:
    assert "antex keys create" in antex(cfg, "usage").output
    create(cfg, "gone")
    antex(cfg, "keys", "revoke", "gone")
    assert "gone" not in antex(cfg, "usage").output
    assert "gone" in antex(cfg, "usage", "gone").output  # by name, the operator can still look


def test_usage_of_a_key_whose_plan_is_gone_is_named_not_hiding_the_others(cfg: Path, tmp_path: Path) -> None:
    team = write_config(tmp_path / "team.toml", database(cfg),
                        '[plans.team]\ncredits_5h = 7\ncredits_7d = 70\nmodels = ["claude-*"]\n'
                        "max_tokens = 100\nmax_ips = 0\nmax_concurrent = 0\n")
    create(team, "t", "team")
    create(cfg, "p", "pro")
    refused = antex(cfg, "usage", "t", code=1).stderr
    assert "plan 'team'" in refused and "antex keys set 1 --plan PLAN" in refused
    listed = antex(cfg, "usage")  # every key: the others are still shown, the orphan is named on stderr
    assert "plan 'team'" in listed.stderr and "antex keys set 1 --plan PLAN" in listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["KEY", "p"]
    listed = antex(cfg, "usage", "--json")
    assert "plan 'team'" in listed.stderr
    assert [orjson.loads(line)["key"]["name"] for line in listed.stdout.splitlines()] == ["p"]
    assert "give --plan too" in antex(cfg, "keys", "set", "t", "--credits-5h", "5", code=1).stderr
    assert key_row(cfg, "t")["limits"] == {}
    antex(cfg, "keys", "set", "1", "--plan", "pro")
    assert "t  sk_live_" in antex(cfg, "usage", "t").output


async def test_usage_json_equals_the_v1_usage_body(gateway: Gateway, tmp_path: Path) -> None:
    key = await gateway.create_key("frank")
    conn = await store.connect(gateway.database)
    try:
        (row,) = await store.SqliteStore(conn).find_keys("frank")
    finally:
        await conn.close()
    now = gateway.clock.now
    # A long history too, so the server reads it in several chunks (store.charge_chunks)
    history = [charge(row.id, now - 6 * DAY + 86.1 * i, 0.5) for i in range(6000)]  # to 33 min ago
    await add_charges(gateway.database, history + [
        charge(row.id, now - 8 * DAY, 99), charge(row.id, now - 2 * DAY + 30, 700),
        charge(row.id, now - 2 * HOUR + 30, 300), charge(row.id, now - 100, 1300),
    ])
    async with ClientSession() as http:
        async with http.get(f"{gateway.url}/v1/usage", headers={"x-api-key": key}) as response:
            assert response.status == 200
            served = await response.json()
    cfg = write_config(tmp_path / "antex.toml", gateway.database)
    result = await asyncio.to_thread(antex, cfg, "usage", "--json", "frank")
    local = orjson.loads(result.stdout)
    assert abs(local.pop("now") - served.pop("now")) <= 5
    assert local == served
    recent = sum(1 for c in history if c.ts > now - 5 * HOUR)
    assert served["status"] == "allowed_warning" and recent > 100
    half_credits = 2 * (300 + 1300) + recent  # of 4000 (2000 credits), shown rounded down to 0.01 %
    assert served["five_hour"]["used_percent"] == half_credits * 10_000 // 4000 / 100
    assert served["seven_day"]["used_percent"] == (700 + 300 + 1300 + 0.5 * 6000) * 100 / 20000


# colour and the terminal renderer


def test_render_usage_colours_only_when_asked(cfg: Path, with_usage: dict[str, Any]) -> None:
    (body,) = [orjson.loads(line) for line in antex(cfg, "usage", "--json", "erin").stdout.splitlines()]
    plain = render_usage(body)
    coloured = render_usage(body, colour=True)
    assert "\x1b" not in plain and "\x1b[31m" in coloured and "\x1b[1m" in coloured
    assert re.sub(r"\x1b\[\d+m", "", coloured) == plain
    assert "\x1b" not in render_table([body]) and "\x1b[31m" in render_table([body], colour=True)
    assert bar(0) == "░" * 24 and bar(100) == bar(250) == "█" * 24 and bar(50, 12) == "█" * 6 + "░" * 6


def run_in_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run a command with a pseudo-terminal as its stdout and stderr; what it drew."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    finally:
        os.close(slave)
    chunks = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        stop(proc)
    assert proc.returncode == 0, b"".join(chunks)
    return b"".join(chunks).decode()


def test_usage_is_coloured_on_a_terminal_unless_no_color(cfg: Path, with_usage: dict[str, Any]) -> None:
    args = [sys.executable, "antex.py", "--config", str(cfg), "usage", "erin"]
    drawn = run_in_terminal(args, clean_env())
    assert "\x1b[31m" in drawn and "full: available again at" in drawn
    assert "\x1b" not in run_in_terminal(args, clean_env(NO_COLOR="1"))
    assert "\x1b" not in run_in_terminal(args + ["--json"], clean_env())


# bad configuration


@pytest.mark.parametrize("text, says", [
    ("[server\nport = 1\n", "not valid TOML"),
    ("[server]\nport = \"eighty\"\n", "[server] port: must be int, not str"),
    ("[server]\nprot = 8080\n", "[server] prot: unknown setting"),
    ("[plans.pro]\ncredits_5h = -1\n", "[plans.pro] credits_5h: must be greater than 0"),
    ("[upstream]\nbase_url = \"api.anthropic.com\"\n", "[upstream] base_url: must be an http:// or https:// URL"),
    ("[servers]\nport = 1\n", "[servers]: unknown section"),
])
def test_bad_config_file_is_a_clean_error_naming_file_and_key(tmp_path: Path, text: str, says: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    for command in (["plans"], ["keys", "list"], ["init"], ["usage"]):
        result = antex(bad, *command, code=1)
        assert str(bad) in result.output and says in result.output, result.output
    result = antex(None, "plans", code=1, env={"ANTEX_CONFIG": str(bad)})
    assert str(bad) in result.output and says in result.output
    assert not (tmp_path / "antex.db").exists()


def test_missing_config_file_is_a_clean_error(tmp_path: Path) -> None:
    result = antex(tmp_path / "nope.toml", "keys", "list", code=1)
    assert "nope.toml: cannot read the file" in result.stderr


def test_serve_without_the_upstream_key_says_which_variable(cfg: Path) -> None:
    result = antex(cfg, "serve", code=1)
    assert "ANTEX_UPSTREAM_KEY" in result.stderr


def test_every_command_documents_itself() -> None:
    for args in ([], ["keys"], ["keys", "create"], ["keys", "set"], ["usage"], ["events"], ["serve"], ["init"], ["upstreams"]):
        result = CliRunner().invoke(cli, [*args, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, args
    assert "keys" in CliRunner().invoke(cli, ["--help"]).output


# real processes: the CLI beside a running `antex serve`


def http(method: str, url: str, key: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    headers = {"anthropic-version": "2023-06-01", "content-type": "application/json"}
    if key:
        headers["x-api-key"] = key
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, orjson.loads(exc.read())


@dataclass
class Live:
    """A fake upstream and `antex serve` as subprocesses, and the CLI as a third."""

    url: str
    config: Path
    server_log: Path

    def cli(self, *args: str, code: int = 0, module: bool = False, **env: str) -> subprocess.CompletedProcess:
        """`python antex.py ARGS` (or `python -m antex`) with ANTEX_CONFIG set, from the repository root."""
        entry = ["-m", "antex"] if module else ["antex.py"]
        done = subprocess.run([sys.executable, *entry, *args], cwd=ROOT, capture_output=True, text=True, timeout=30,
                              env=clean_env(ANTEX_CONFIG=str(self.config), **env))
        assert done.returncode == code, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        return done

    def message(self, key: str) -> tuple[int, dict]:
        return http("POST", f"{self.url}/v1/messages", key,
                    {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})

    def within_a_second(self, key: str, status: int) -> tuple[int, dict]:
        """Poll until a request with `key` answers `status`; fails after 1 s."""
        deadline = time.monotonic() + 1.0
        while True:
            answer = self.message(key)
            if answer[0] == status or time.monotonic() > deadline:
                assert answer[0] == status, (answer, self.server_log.read_text(errors="replace")[-2000:])
                return answer
            time.sleep(0.05)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    work = tmp_path_factory.mktemp("live")
    procs: list[subprocess.Popen] = []
    try:
        fake_log = work / "fake.log"
        with fake_log.open("wb") as out:
            procs.append(fake := subprocess.Popen(
                [sys.executable, "-m", "tests.fake_anthropic", "--port", "0"], cwd=ROOT, env=clean_env(),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT))
        fake_url = wait_for(fake_log, fake, r"listening on (http://\S+)").group(1)

        port = free_port()
        config = write_config(work / "antex.toml", work / "antex.db",
                              f"port = {port}\nshutdown_grace_s = 1\n[upstream]\nbase_url = \"{fake_url}\"\n")
        server_log = work / "server.log"
        with server_log.open("wb") as out:
            procs.append(server := subprocess.Popen(
                [sys.executable, "antex.py", "--config", str(config), "serve"], cwd=ROOT,
                env=clean_env(ANTEX_UPSTREAM_KEY=DEFAULT_API_KEY), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            assert server.poll() is None, server_log.read_text(errors="replace")
            try:
                if http("GET", f"{url}/healthz")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, server_log.read_text(errors="replace")
            time.sleep(0.05)
        yield Live(url, config, server_log)
    finally:
        for proc in reversed(procs):
            stop(proc)


def test_cli_changes_reach_the_running_server_within_a_second(live: Live) -> None:
    created = orjson.loads(live.cli("keys", "create", "gail", "--plan", "pro", "--json").stdout)
    key = created["key"]
    status, body = live.within_a_second(key, 200)
    assert body["type"] == "message"

    live.cli("keys", "quarantine", "gail", "--reason", "posted on a forum")
    status, body = live.within_a_second(key, 403)
    assert body["error"]["type"] == "key_quarantined"
    assert "posted on a forum" in body["error"]["message"]

    live.cli("keys", "release", created["prefix"], module=True)
    live.within_a_second(key, 200)

    live.cli("keys", "revoke", str(created["id"]))
    status, body = live.within_a_second(key, 401)
    assert body["error"]["type"] == "authentication_error" and "revoked" in body["error"]["message"]
    assert "revoked" in live.cli("keys", "release", "gail", code=1).stderr
    live.within_a_second(key, 401)
    assert key not in live.server_log.read_text(errors="replace")


def test_usage_remote_reads_the_running_server(live: Live) -> None:
    key = orjson.loads(live.cli("keys", "create", "hana", "--plan", "starter", "--json").stdout)["key"]
    live.within_a_second(key, 200)
    live.message(key)

    drawn = live.cli("usage", "--remote", live.url, "--key", key).stdout
    lines = drawn.splitlines()
    assert lines[0].startswith("hana  sk_live_") and "plan starter  (ok)" in lines[0]
    assert re.match(r"  5-hour  [█░]{24} +\d+\.\d%  next release at (\w{3} )?\d\d:\d\d \(in (4h 59m|5h 0m)\)$",
                    lines[1]), lines[1]
    assert lines[2].startswith("  weekly  ") and "next release at" in lines[2]
    assert "\x1b" not in drawn

    by_env = live.cli("usage", ANTEX_BASE_URL=live.url + "/v1", ANTEX_API_KEY=key).stdout
    assert by_env.splitlines()[0] == lines[0]
    as_argument = live.cli("usage", key, "--remote", live.url).stdout
    assert as_argument.splitlines()[0] == lines[0]

    remote = orjson.loads(live.cli("usage", "--json", "--remote", live.url, "--key", key).stdout)
    status, served = http("GET", f"{live.url}/v1/usage", key)
    assert status == 200
    assert abs(remote.pop("now") - served.pop("now")) <= 5
    assert remote == served
    assert remote["key"]["name"] == "hana" and remote["five_hour"]["resets_at"] is not None


def test_usage_remote_errors_are_clean(live: Live) -> None:
    wrong = "sk_live_" + "x" * 43
    result = live.cli("usage", "--remote", live.url, "--key", wrong, code=1)
    assert "answered 401" in result.stderr and "Invalid API key" in result.stderr
    result = live.cli("usage", "--remote", live.url, code=1)
    assert "--key" in result.stderr
    result = live.cli("usage", "--remote", f"http://127.0.0.1:{free_port()}", "--key", wrong, code=1)
    assert "Cannot reach" in result.stderr
    result = live.cli("usage", "hana", "--remote", live.url, "--key", wrong, code=1)
    assert "only name a key in the local database" in result.stderr


def test_serve_without_the_upstream_key_exits_with_a_clear_message(live: Live) -> None:
    result = live.cli("serve", "--port", str(free_port()), code=1)
    assert "ANTEX_UPSTREAM_KEY" in result.stderr and "Anthropic API key" in result.stderr
    result = live.cli("serve", "--port", str(free_port()), code=1, module=True, ANTEX_UPSTREAM_KEY="  ")
    assert "ANTEX_UPSTREAM_KEY" in result.stderr


def test_python_m_antex_runs_the_same_cli(live: Live) -> None:
    assert live.cli("--version", module=True).stdout.startswith("antex, version ")
    listed = [orjson.loads(line) for line in live.cli("keys", "list", "--json", module=True).stdout.splitlines()]
    assert all(KEY_PATTERN.fullmatch(k["prefix"] + "x" * 39) for k in listed)
    assert "pro: 2000 credits / 5 h" in live.cli("plans", module=True).stdout


@pytest.mark.parametrize("percent, shown", [(99.99, "99.9"), (100.0, "100.0"), (45.0, "45.0"), (0.04, "0.0")])
def test_terminal_percent_only_shows_full_when_full(percent: float, shown: str) -> None:
    from antex.terminal import shown_percent

    assert shown_percent(percent) == shown


def test_usage_watch_redraws_until_interrupted(cfg: Path) -> None:
    create(cfg, "alice")
    proc = subprocess.Popen([sys.executable, "antex.py", "--config", str(cfg), "usage", "--watch", "--interval", "0.5"],
                            cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    drawn = b""
    try:
        deadline = time.monotonic() + 60  # a loaded machine starts Python slowly; wait for the draws, not a time
        while drawn.count(b"alice") < 3 and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 0.5)[0]:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                drawn += chunk
        assert drawn.count(b"alice") >= 3, drawn  # drawn again every half second
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        stop(proc)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
