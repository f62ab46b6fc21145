"""Several `antex serve` processes on one PostgreSQL database, as an operator runs them: requests
spread round-robin, the CLI changing keys, `kill -9` of one instance mid-stream, and PostgreSQL
itself stopped and started under load. Real processes, a real PostgreSQL server, the fake upstream."""
from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest

from antex import journal
from antex.cluster import Copies
from antex.store import feed
from tests.conftest import ROOT, insert_key, sample_body
from tests.fake_anthropic import FakeAnthropic
from tests.fake_replies import text_reply
from tests.postgres import PASSWORD, PostgresServer
from tests.processes import clean_env, free_port, stop
from tests.test_reliability import Served, fake, stream  # noqa: F401  (fake: the upstream fixture)

TEXT = "one two three four five six seven eight nine ten"
COST = dict(input_tokens=2000, output_tokens=0)  # 0.6 credits on claude-sonnet-4-6


class Instance(Served):
    """One `antex serve` process on the shared database, with an instance id and journal of its own."""

    def __init__(self, tmp_path: Path, database: str, upstream_url: str, name: str) -> None:
        self.name = name
        self.database = database
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp_path / f"{name}.toml"
        self.config.write_text(
            f'[server]\ndatabase = "{database}"\nport = {self.port}\ninstance_id = "{name}"\n'
            f'journal_dir = "{tmp_path}"\n[upstream]\nbase_url = "{upstream_url}"\nidle_timeout_s = 30\n')
        self.journal = journal.path_for(str(tmp_path / f"antex-{name}"))
        self.log = tmp_path / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "antex.py", "--config", str(self.config), *args], cwd=ROOT,
                              env=clean_env(), capture_output=True, text=True, timeout=60)


@pytest.fixture
async def cluster(tmp_path: Path, fake: FakeAnthropic, postgres_url: str):
    made: list[Instance] = []

    async def start(count: int) -> list[Instance]:
        for _ in range(count):
            made.append(Instance(tmp_path, postgres_url, fake.url, f"web-{len(made) + 1}"))
        await asyncio.gather(*(instance.start() for instance in made[-count:]))
        return made[-count:]

    yield start
    for instance in made:
        if instance.proc is not None:
            stop(instance.proc)


async def post(url: str, key: str, **body) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/v1/messages", json=sample_body(**body), headers={"x-api-key": key}) as resp:
            return resp.status, orjson.loads(await resp.read())


async def used_percent(url: str, key: str) -> float:
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/v1/usage", headers={"x-api-key": key}) as resp:
            body = await resp.json()
            return body["five_hour"]["used_percent"] if resp.status == 200 else -1.0  # not yet known there


async def until(check, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def events(url: str) -> list[tuple]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch("SELECT journal_id, outcome, input_tokens FROM events ORDER BY id")]
    finally:
        await conn.close()


@pytest.mark.parametrize("count", [1, 2, 3])
async def test_a_key_is_refused_at_the_same_total_on_one_two_and_three_processes(
        cluster, fake: FakeAnthropic, postgres_url: str, count: int) -> None:
    instances = await cluster(count)
    key = await insert_key(postgres_url, "alice", "pro", {"credits_5h": 3.0})
    sent = 0
    while True:
        instance = instances[sent % count]
        await until(lambda: _knows(instance, key), 2, "the new key")
        fake.queue(text_reply("ok", **COST))
        status, body = await post(instance.url, key)
        if status == 429:
            assert body["error"]["type"] == "rate_limit_error"
            break
        assert status == 200, body
        sent += 1
        expected = round(100 * 0.6 * sent / 3.0, 1)
        for other in instances:  # every instance knows the charge before the next request
            await until(lambda: _used_is(other, key, expected), 1, f"{expected} % on {other.name}")
    assert sent == 5  # 0.6 credits each against 3: the sixth finds the window full, as on one process


async def _knows(instance: Instance, key: str) -> bool:
    async with aiohttp.ClientSession() as http:
        async with http.get(instance.url + "/v1/usage", headers={"x-api-key": key}) as resp:
            return resp.status == 200


async def _used_is(instance: Instance, key: str, expected: float) -> bool:
    return abs(await used_percent(instance.url, key) - expected) < 0.05


async def test_a_revocation_from_the_cli_is_refused_by_every_process_within_a_second(
        cluster, fake: FakeAnthropic, postgres_url: str) -> None:
    instances = await cluster(3)
    created = instances[0].cli("keys", "create", "bob", "--plan", "pro", "--json")
    assert created.returncode == 0, created.stderr
    key = orjson.loads(created.stdout)["key"]
    for instance in instances:
        await until(lambda: _knows(instance, key), 1, f"the new key on {instance.name}")
    revoked = instances[1].cli("keys", "revoke", "bob")
    assert revoked.returncode == 0, revoked.stderr
    started = time.monotonic()
    for instance in instances:
        await until(lambda: _refused(instance, key), 1.0 - (time.monotonic() - started), f"revoked on {instance.name}")
    for instance in instances:  # the database URL's password is never logged
        assert PASSWORD not in instance.log.read_text() and "database postgresql://antex:***@" in instance.log.read_text()


async def _refused(instance: Instance, key: str) -> bool:
    return (await post(instance.url, key))[0] == 401


async def test_kill_9_of_one_instance_mid_stream(cluster, fake: FakeAnthropic, postgres_url: str) -> None:
    """The others keep serving; after its restart every request it had sent upstream is in the
    ledger once, and nothing of the other instance's is touched."""
    a, b = await cluster(2)
    key = await insert_key(postgres_url, "load", "max", {"max_concurrent": 0})
    for instance in (a, b):
        await until(lambda: _knows(instance, key), 2, "the new key")
    count = 20
    fake.queue(*[text_reply(TEXT, events=10, delay_s=0.3, input_tokens=77, output_tokens=40) for _ in range(2 * count)])
    on_a = [asyncio.create_task(stream(a.url, key)) for _ in range(count)]
    on_b = [asyncio.create_task(stream(b.url, key)) for _ in range(count)]
    await fake.wait_for_requests(2 * count, timeout_s=30)
    await asyncio.sleep(0.6)  # every stream is past its message_start (after 0.3 s)
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(timeout=10)
    assert all(error is not None for _, error in await asyncio.gather(*on_a))
    assert all(error is None and b"message_stop" in body for body, error in await asyncio.gather(*on_b))
    fake.queue(text_reply("ok"))
    assert (await post(b.url, key))[0] == 200  # b goes on serving
    assert len(journal.read_open(a.journal)) == count  # a's journal holds its cut requests

    await a.start()  # settles its own journal, and only that
    rows = await events(postgres_url)
    assert len(rows) == len(fake.requests) == 2 * count + 1
    assert len({journal_id for journal_id, _, _ in rows}) == len(rows)  # each request once
    interrupted = [row for row in rows if row[1] == "interrupted"]
    assert len(interrupted) == count and all(row[0].startswith("web-1/") and row[2] == 77 for row in interrupted)
    assert journal.read_open(a.journal) == []


async def test_postgresql_stopped_and_started_under_load(cluster, fake: FakeAnthropic, postgres_url: str,
                                                         postgres_server: PostgresServer) -> None:
    """The instances serve from memory while PostgreSQL is down, say degraded, and write every
    charge once when it is back: nothing lost, nothing doubled."""
    instances = await cluster(2)
    key = await insert_key(postgres_url, "load", "max", {"max_concurrent": 0})
    for instance in instances:
        await until(lambda: _knows(instance, key), 2, "the new key")
    served = 0
    stopping = asyncio.Event()

    async def traffic(instance: Instance) -> None:
        nonlocal served
        while not stopping.is_set():
            status, body = await post(instance.url, key)
            assert status == 200, body
            served += 1

    load = [asyncio.create_task(traffic(instance)) for instance in instances]
    try:
        await asyncio.sleep(0.5)
        postgres_server.stop()
        before = served
        await until(lambda: _degraded(instances[0]), 10, "healthz saying degraded")
        await asyncio.sleep(1.0)
        assert served > before  # still serving from memory
        postgres_server.start()
        await asyncio.sleep(0.5)
    finally:
        stopping.set()
        await asyncio.gather(*load)
    for instance in instances:
        await until(lambda: _healthy(instance), 30, f"{instance.name} healthy again")

    async def all_written() -> bool:
        return len(await events(postgres_url)) >= served

    await until(all_written, 10, "every charge written")
    await asyncio.sleep(0.3)  # a charge written twice would show by now
    rows = await events(postgres_url)
    assert len(rows) == served == len(fake.requests)
    assert len({journal_id for journal_id, _, _ in rows}) == len(rows)


async def _degraded(instance: Instance) -> bool:
    async with aiohttp.ClientSession() as http:
        async with http.get(instance.url + "/healthz") as resp:
            return (await resp.json())["status"] == "degraded"


async def _healthy(instance: Instance) -> bool:
    async with aiohttp.ClientSession() as http:
        async with http.get(instance.url + "/healthz") as resp:
            return resp.status == 200 and (await resp.json())["status"] == "ok"


async def test_a_second_process_with_the_same_instance_id_is_refused(cluster, tmp_path: Path) -> None:
    (first,) = await cluster(1)
    twin = subprocess.run([sys.executable, "antex.py", "--config", str(first.config), "serve", "--port",
                           str(free_port())], cwd=ROOT, env=clean_env(ANTEX_UPSTREAM_KEY="sk-ant-test"),
                          capture_output=True, text=True, timeout=60)
    assert twin.returncode == 1 and "already instance 'web-1'" in twin.stderr and "Traceback" not in twin.stderr


async def test_a_stop_while_postgresql_is_down_keeps_the_charges_for_the_next_start(
        cluster, fake: FakeAnthropic, postgres_url: str, postgres_server: PostgresServer) -> None:
    (a,) = await cluster(1)
    key = await insert_key(postgres_url, "alice", "pro", {"max_concurrent": 0})
    await until(lambda: _knows(a, key), 2, "the new key")
    assert (await post(a.url, key))[0] == 200  # the key's windows are in memory from now on
    await until(lambda: _count_is(postgres_url, 1), 5, "the first charge written")
    postgres_server.stop()
    try:
        for _ in range(10):
            assert (await post(a.url, key))[0] == 200  # served from memory
        stop(a.proc)
        assert a.proc.returncode == 0
        left = journal.read_open(a.journal)
        assert len(left) == 10 and all(request.charged for request in left)  # each with its exact charge
    finally:
        postgres_server.start()
    await a.start()
    await until(lambda: _count_is(postgres_url, 11), 10, "every charge written")
    rows = await events(postgres_url)
    assert len(rows) == 11 == len(fake.requests) and len({row[0] for row in rows}) == 11
    assert {row[1] for row in rows} == {"complete"}  # written as settled, not as interrupted estimates


async def _count_is(url: str, count: int) -> bool:
    return len(await events(url)) == count


async def test_a_read_while_postgresql_is_down_answers_503_and_logs_once(
        cluster, fake: FakeAnthropic, postgres_url: str, postgres_server: PostgresServer) -> None:
    """A key whose windows are not loaded yet needs a read: with PostgreSQL stopped it gets a 503
    with retry-after (in each route's shape), not a 500 and a traceback per request."""
    alice = await insert_key(postgres_url, "alice", "pro", {"max_concurrent": 0})
    bob = await insert_key(postgres_url, "bob", "pro", {"max_concurrent": 0})
    (instance,) = await cluster(1)
    assert (await post(instance.url, alice))[0] == 200
    postgres_server.stop()
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("/v1/messages", "/v1/usage", "/v1/responses/resp_any") * 3:
                method = http.get if path != "/v1/messages" else http.post
                async with method(instance.url + path, json=sample_body(), headers={"x-api-key": bob}) as resp:
                    body = await resp.json()
                    assert resp.status == 503 and resp.headers["retry-after"].isdigit(), (path, body)
                assert body["error"]["type"] == "api_error" and "try again" in body["error"]["message"]
    finally:
        postgres_server.start()

    async def served() -> bool:
        return (await post(instance.url, bob))[0] == 200

    await until(served, 15, "bob served once PostgreSQL is back")
    stop(instance.proc)
    instance.proc = None
    printed = instance.log.read_text()
    assert "unexpected error" not in printed and bob not in printed
    # (asyncpg's own pool says, with a traceback, when it cannot restore its floor while the server stops)
    assert printed.count("Traceback") == printed.count("asyncpg.pool: Failed to restore"), printed
    assert len([line for line in printed.splitlines() if "reading PostgreSQL failed" in line]) <= 2, printed
    assert len([line for line in printed.splitlines() if "reading PostgreSQL works again" in line]) == 1, printed


def test_a_charge_counts_once_however_late_its_second_copy() -> None:
    """Copies: the first copy of either kind counts; the other kind is skipped whenever it comes
    (a commit held up for minutes by a store outage), then forgotten."""
    copies = Copies()
    assert copies.counts("web-1/a", committed=False)
    assert not copies.counts("web-1/a", committed=False)  # the same copy again (a catch-up)
    assert not copies.counts("web-1/a", committed=True)  # its commit, however late
    assert copies.counts("web-1/b", committed=True)  # only the commit copy reached this instance
    assert not copies.counts("web-1/b", committed=False)
    assert copies._awaited == {}  # both copies in: nothing remembered
    copies.reset(["web-1/c"])
    assert not copies.counts("web-1/c", committed=True) and not copies.counts("web-1/c", committed=False)


def test_ids_awaiting_their_other_copy_are_bounded(monkeypatch) -> None:
    monkeypatch.setattr("antex.cluster.MAX_AWAITED", 3)
    copies = Copies()
    for name in "abcd":
        assert copies.counts(name, committed=False)
    assert list(copies._awaited) == ["b", "c", "d"]  # the oldest went


def test_committed_notifications_are_marked() -> None:
    first, = feed.settled_messages("web-1", [(3, 1.0, 5, "web-1/x")], [])
    committed, = feed.settled_messages("web-1", [(3, 1.0, 5, "web-1/x")], [], committed=True)
    assert "k" not in orjson.loads(first) and orjson.loads(committed)["k"] == 1
