"""Nothing lost: the write-ahead journal across SIGKILL, and a graceful SIGTERM, on real processes."""
from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from antex import store
from antex.app import make_app
from tests.conftest import ROOT, build_config, insert_key, sample_body
from tests.fake_anthropic import DEFAULT_API_KEY, FakeAnthropic
from tests.fake_replies import text_reply
from tests.processes import clean_env, free_port, stop

TEXT = "one two three four five six seven eight nine ten"


class Served:
    """`antex serve` as a real process, on a temp database, in front of an in-process fake."""

    def __init__(self, tmp_path: Path, upstream_url: str, extra: str = "") -> None:
        self.database = tmp_path / "antex.db"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp_path / "antex.toml"
        self.config.write_text(
            f'[server]\ndatabase = "{self.database}"\nport = {self.port}\n{extra}\n'
            f'[upstream]\nbase_url = "{upstream_url}"\nidle_timeout_s = 30\n')
        self.log = tmp_path / "server.log"
        self.proc: subprocess.Popen | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "antex.py", "--config", str(self.config), "serve"], cwd=ROOT,
                                         env=clean_env(ANTEX_UPSTREAM_KEY=DEFAULT_API_KEY), stdout=out, stderr=out)
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, self.log.read_text()
                try:
                    async with http.get(self.url + "/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
        raise AssertionError("antex serve did not come up:\n" + self.log.read_text())

    def rows(self, sql: str) -> list[tuple]:
        db = sqlite3.connect(self.database)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()


@pytest.fixture
async def fake() -> FakeAnthropic:
    upstream = FakeAnthropic()
    await upstream.start()
    yield upstream
    await upstream.close()


@pytest.fixture
async def served(tmp_path: Path, fake: FakeAnthropic):
    made: list[Served] = []

    def make(extra: str = "") -> Served:
        made.append(Served(tmp_path, fake.url, extra))
        return made[-1]

    yield make
    for server in made:
        if server.proc is not None:
            stop(server.proc)


async def stream(url: str, key: str) -> tuple[bytes, BaseException | None]:
    """Read a whole stream; returns what arrived and how it ended."""
    received = b""
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(url + "/v1/messages", json=sample_body(stream=True), headers={"x-api-key": key}) as resp:
                async for chunk in resp.content.iter_any():
                    received += chunk
    except (aiohttp.ClientError, ConnectionError) as exc:
        return received, exc
    return received, None


async def test_sigkill_under_load_then_restart_accounts_for_every_request(served, fake: FakeAnthropic) -> None:
    server = served()
    await server.start()
    key = await insert_key(str(server.database), "load", "max", {"max_concurrent": 0})
    await asyncio.sleep(0.4)  # the server picks the new key up
    count = 60
    fake.queue(*[text_reply(TEXT, events=10, delay_s=0.5, input_tokens=77, output_tokens=40) for _ in range(count)])
    clients = [asyncio.create_task(stream(server.url, key)) for _ in range(count)]
    await fake.wait_for_requests(count, timeout_s=30)
    await asyncio.sleep(1.0)  # every stream has sent its message_start (after 0.5 s)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=10)
    await asyncio.gather(*clients)
    assert server.rows("SELECT COUNT(*) FROM inflight") == [(count,)]  # the journal survived the crash

    await server.start()  # the next start settles what the crash left open
    stop(server.proc)
    assert server.proc.returncode == 0
    events = server.rows("SELECT outcome, estimated, input_tokens, micro_credits FROM events")
    assert len(events) == len(fake.requests) == count
    assert {row[0] for row in events} == {"interrupted"}
    # Usage seen in message_start before the crash is what is charged; nothing was guessed.
    assert {(row[1], row[2]) for row in events} == {(0, 77)}
    assert all(row[3] > 0 for row in events)
    assert server.rows("SELECT COUNT(*) FROM inflight") == [(0,)]


async def test_recovery_estimates_requests_whose_usage_was_never_seen(tmp_path: Path, aiohttp_server, fake) -> None:
    database = tmp_path / "antex.db"
    key = await insert_key(str(database), "alice", "pro")
    conn = await store.connect(str(database))
    await conn.execute("INSERT INTO inflight (id, key_id, started_at, model, endpoint, estimated_input) "
                       "VALUES ('x-1', 1, 0, 'claude-opus-4-6', '/v1/messages', 1000)")
    await conn.close()
    app = make_app(build_config(database, fake.url), upstream_key=DEFAULT_API_KEY)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as http:
        async with http.get(str(server.make_url("/v1/usage")), headers={"x-api-key": key}) as resp:
            usage = await resp.json()
    # 1000 estimated input tokens on Opus (500 credits/MTok) = 0.5 credits of pro's 2000 per 5 h.
    assert usage["five_hour"]["used_percent"] == 0.02
    db = sqlite3.connect(database)
    assert db.execute("SELECT outcome, estimated, input_tokens FROM events").fetchall() == [("interrupted", 1, 1000)]


async def test_sigterm_lets_running_streams_finish_and_exits_zero(served, fake: FakeAnthropic) -> None:
    server = served("shutdown_grace_s = 10")
    await server.start()
    key = await insert_key(str(server.database), "alice", "pro")
    await asyncio.sleep(0.4)
    fake.queue(text_reply(TEXT, events=8, delay_s=0.25, input_tokens=10, output_tokens=20))
    running = asyncio.create_task(stream(server.url, key))
    await fake.wait_for_requests(1)
    await asyncio.sleep(0.3)
    server.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    with pytest.raises(aiohttp.ClientConnectionError):  # no new connections once stopping
        async with aiohttp.ClientSession() as http:
            await http.get(server.url + "/healthz")
    body, error = await running
    assert error is None and b"event: message_stop" in body
    assert server.proc.wait(timeout=15) == 0
    assert server.rows("SELECT outcome, output_tokens FROM events") == [("complete", 20)]


async def test_sigterm_cuts_streams_past_the_grace_period_and_settles_them(served, fake: FakeAnthropic) -> None:
    server = served("shutdown_grace_s = 1")
    await server.start()
    key = await insert_key(str(server.database), "alice", "pro")
    await asyncio.sleep(0.4)
    fake.queue(text_reply(TEXT, events=10, delay_s=1.0, input_tokens=55, output_tokens=20))
    running = asyncio.create_task(stream(server.url, key))
    await fake.wait_for_requests(1)
    await asyncio.sleep(1.3)  # message_start has arrived
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=15) == 0
    assert time.monotonic() - started < 8
    body, _ = await running
    assert b"event: message_stop" not in body
    assert server.rows("SELECT outcome, input_tokens FROM events") == [("interrupted", 55)]
    assert server.rows("SELECT COUNT(*) FROM inflight") == [(0,)]


async def test_two_requests_racing_on_the_last_percent_are_both_charged(make_gateway) -> None:
    """Admission is decided before the cost is known: both racers get in, both are charged in
    full, and the window then refuses until enough ages out."""
    gateway = await make_gateway()
    key = await gateway.create_key("alice", credits_5h=1.0)
    gateway.fake.queue(text_reply("fill", input_tokens=3300, output_tokens=0))  # 0.99 credits: 99 %
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.url + "/v1/messages", json=sample_body(), headers={"x-api-key": key}) as resp:
            assert resp.status == 200
            assert resp.headers["anthropic-ratelimit-unified-5h-status"] == "allowed"
        gateway.fake.queue(text_reply("a", input_tokens=1000, output_tokens=0, delay_s=0.2),
                           text_reply("b", input_tokens=1000, output_tokens=0, delay_s=0.2))

        async def racer() -> int:
            async with http.post(gateway.url + "/v1/messages", json=sample_body(), headers={"x-api-key": key}) as resp:
                return resp.status

        assert await asyncio.gather(racer(), racer()) == [200, 200]
        async with http.post(gateway.url + "/v1/messages", json=sample_body(), headers={"x-api-key": key}) as resp:
            assert resp.status == 429
        async with http.get(gateway.url + "/v1/usage", headers={"x-api-key": key}) as resp:
            assert (await resp.json())["five_hour"]["used_percent"] == 159.0


async def test_cli_writes_while_the_server_writes_never_lock(served, fake: FakeAnthropic) -> None:
    server = served()
    await server.start()
    key = await insert_key(str(server.database), "busy", "max", {"max_concurrent": 0})
    await asyncio.sleep(0.4)

    async def traffic() -> list[int]:
        statuses = []
        async with aiohttp.ClientSession() as http:
            for _ in range(40):
                async with http.post(server.url + "/v1/messages", json=sample_body(),
                                     headers={"x-api-key": key}) as resp:
                    statuses.append(resp.status)
        return statuses

    async def cli(index: int) -> subprocess.CompletedProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "antex.py", "--config", str(server.config), "keys", "create", f"k{index}", "--plan", "pro",
            cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await proc.communicate()
        return proc.returncode, err.decode()

    results = await asyncio.gather(*(traffic() for _ in range(4)), *(cli(i) for i in range(6)))
    assert all(status == 200 for statuses in results[:4] for status in statuses)
    for code, err in results[4:]:
        assert code == 0 and "locked" not in err, err
    stop(server.proc)
    assert "database is locked" not in server.log.read_text()
    assert server.rows("SELECT COUNT(*) FROM events") == [(160,)]
