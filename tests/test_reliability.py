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
import orjson
import pytest

from antex import journal, store
from antex.app import make_app
from antex.appkeys import LEDGER
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

    def left_open(self) -> list[journal.OpenRequest]:
        """The requests the journal file holds open, as the next start will read them."""
        settled = orjson.loads(self.rows("SELECT ids FROM journal_settled")[0][0])
        return journal.read_open(journal.path_for(str(self.database)), settled)

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
    left = server.left_open()  # the journal survived the crash
    assert len(left) == count and all(request.usage and request.usage["input_tokens"] == 77 for request in left)

    await server.start()  # the next start settles what the crash left open
    stop(server.proc)
    assert server.proc.returncode == 0
    events = server.rows("SELECT outcome, estimated, input_tokens, micro_credits FROM events")
    assert len(events) == len(fake.requests) == count
    assert {row[0] for row in events} == {"interrupted"}
    # Usage seen in message_start before the crash is what is charged; nothing was guessed.
    assert {(row[1], row[2]) for row in events} == {(0, 77)}
    assert all(row[3] > 0 for row in events)
    assert server.left_open() == []
    assert Path(journal.path_for(str(server.database))).stat().st_size == 0  # a clean stop leaves it empty


async def test_recovery_charges_exactly_the_requests_left_open(tmp_path: Path, aiohttp_server, fake) -> None:
    """What a crash can leave: requests admitted and never settled (with or without the usage of
    their message_start), settled ones, one whose credit event was committed but whose "settled"
    line was never written, a line cut short, and a row an older Antex left in its SQLite journal."""
    database = tmp_path / "antex.db"
    key = await insert_key(str(database), "alice", "pro")
    conn = await store.connect(str(database))
    await conn.execute("INSERT INTO inflight (id, key_id, started_at, model, endpoint, estimated_input) "
                       "VALUES ('old-1', 1, 0, 'claude-haiku-4-5', '/v1/messages', 10)")
    await conn.execute("UPDATE journal_settled SET ids = '[\"b-4\"]'")
    await conn.close()
    lines = [
        ["a", "b-1", 1, 1.0, "claude-opus-4-6", "/v1/messages", 1000],  # usage never seen: estimated
        ["a", "b-2", 1, 2.0, "claude-sonnet-4-6", "/v1/chat/completions", 50],
        ["u", "b-2", {"input_tokens": 40, "output_tokens": 1}],  # usage seen: charged as seen
        ["a", "b-3", 1, 3.0, "claude-sonnet-4-6", "/v1/messages", 50],
        ["a", "b-4", 1, 4.0, "claude-sonnet-4-6", "/v1/messages", 50],
        ["s", ["b-3"]],  # settled; b-4's event was committed (journal_settled) before its line
    ]
    Path(journal.path_for(str(database))).write_bytes(
        b"".join(orjson.dumps(line) + b"\n" for line in lines) + b'["a", "b-5", 1, 5.0, "claude-')
    app = make_app(build_config(database, fake.url), upstream_key=DEFAULT_API_KEY)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as http:
        async with http.get(str(server.make_url("/v1/usage")), headers={"x-api-key": key}) as resp:
            usage = await resp.json()
    db = sqlite3.connect(database)
    assert sorted(db.execute("SELECT endpoint, model, outcome, estimated, input_tokens FROM events").fetchall()) == [
        ("/v1/chat/completions", "claude-sonnet-4-6", "interrupted", 0, 40),
        ("/v1/messages", "claude-haiku-4-5", "interrupted", 1, 10),
        ("/v1/messages", "claude-opus-4-6", "interrupted", 1, 1000),
    ]
    assert db.execute("SELECT COUNT(*) FROM inflight").fetchone() == (0,)
    assert journal.read_open(journal.path_for(str(database))) == []  # settled, and rewritten empty
    # Opus 1000 x 500 + Sonnet (40 x 300 + 1 x 1500) + Haiku 10 x 100 credits/MTok = 0.5145 of pro's 2000 per 5 h.
    assert usage["five_hour"]["used_percent"] == 0.02


async def test_a_second_server_on_the_same_database_is_refused(tmp_path: Path, aiohttp_server, fake) -> None:
    """It would settle the first one's running requests as crashed: one server per database."""
    database = tmp_path / "antex.db"
    await aiohttp_server(make_app(build_config(database, fake.url), upstream_key=DEFAULT_API_KEY))
    with pytest.raises(journal.DatabaseInUse, match="Another Antex server is already using"):
        await aiohttp_server(make_app(build_config(database, fake.url), upstream_key=DEFAULT_API_KEY))


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
    assert server.left_open() == []


async def test_sigterm_gives_streams_one_grace_period_not_two(served, fake: FakeAnthropic) -> None:
    """Before: the handlers waited shutdown_grace_s, then the stream relays waited it again, so a
    stream outliving the grace held the stop for twice the grace (~6 s here)."""
    grace_s = 3
    server = served(f"shutdown_grace_s = {grace_s}")
    await server.start()
    key = await insert_key(str(server.database), "alice", "pro")
    await asyncio.sleep(0.4)
    fake.queue(text_reply(TEXT, events=10, delay_s=2.0, input_tokens=55, output_tokens=20))  # 20 s: past the grace
    running = asyncio.create_task(stream(server.url, key))
    await fake.wait_for_requests(1)
    await asyncio.sleep(0.5)
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.proc.wait, 15) == 0
    took = time.monotonic() - started
    assert grace_s - 0.2 < took < grace_s + 1.5, took  # the grace honoured, once, plus the final flush
    body, _ = await running
    assert b"event: message_stop" not in body
    assert server.rows("SELECT outcome, input_tokens FROM events") == [("interrupted", 55)]


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


async def test_a_journal_that_cannot_be_written_refuses_the_request(make_gateway, monkeypatch, caplog) -> None:
    """Nothing goes upstream unjournaled: a full disk is a clear 503, said once in the log, and the
    slot is freed."""
    gateway = await make_gateway()
    key = await gateway.create_key("alice", max_concurrent=1)

    def disk_full(*args) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gateway.app[LEDGER].journal_file, "admitted", disk_full)
    async with aiohttp.ClientSession() as http:
        for _ in range(3):  # the second would be refused for concurrency if the first kept its slot
            async with http.post(gateway.url + "/v1/messages", json=sample_body(), headers={"x-api-key": key}) as resp:
                assert resp.status == 503 and resp.headers["retry-after"]
                assert (await resp.json())["error"]["type"] == "api_error"
        async with http.get(gateway.url + "/healthz") as resp:
            assert resp.status == 503
            assert "No space left" in (await resp.json())["ledger"]["journal_error"]
    assert gateway.fake.requests == []
    assert len([r for r in caplog.records if "No space left" in r.getMessage()]) == 1  # once, not per request
    assert "Traceback" not in caplog.text


async def test_antex_serve_on_a_database_in_use_exits_with_a_clear_message(served, tmp_path: Path) -> None:
    server = served()
    await server.start()
    second = tmp_path / "second.toml"
    second.write_text(server.config.read_text().replace(f"port = {server.port}", f"port = {free_port()}"))
    completed = subprocess.run([sys.executable, "antex.py", "--config", str(second), "serve"], cwd=ROOT, timeout=60,
                               env=clean_env(ANTEX_UPSTREAM_KEY=DEFAULT_API_KEY), capture_output=True, text=True)
    assert completed.returncode == 1
    assert "Another Antex server is already using" in completed.stderr and "Traceback" not in completed.stderr
    async with aiohttp.ClientSession() as http:  # the first one is unharmed
        async with http.get(server.url + "/healthz") as resp:
            assert resp.status == 200
