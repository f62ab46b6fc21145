"""A store that stops writing, with real OS faults on a real `antex serve`: a file-size limit, a
writer from another process holding the SQLite lock, the database directory removed.

What must hold: requests are served while the journal can take them and refused with a clear 503
once it cannot; /healthz says 503 with the number of unwritten charges within a few seconds; the
log says so once per change of state, never a traceback per retry; SIGTERM exits within
shutdown_grace_s plus a bounded flush; the next start writes what was left, each request once.
"""
from __future__ import annotations

import asyncio
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from antex import journal
from tests.conftest import ROOT, insert_key, sample_body
from tests.test_reliability import Served
from tests.fake_anthropic import DEFAULT_API_KEY, FakeAnthropic
from tests.processes import clean_env, free_port, stop

GRACE_S = 1
STOP_BOUND_S = GRACE_S + 5 + 2 + 3  # grace, the bounded flush (ledger.FLUSH_ON_STOP_S), the writer's busy timeout, slack


class Server(Served):
    """`antex serve` as a real process whose output goes through a pipe: a file-size limit on the
    process must not stop it from logging. Its database, config and journal share one directory."""

    def __init__(self, directory: Path, upstream_url: str) -> None:
        super().__init__(directory, upstream_url, f"shutdown_grace_s = {GRACE_S}")
        self.output: list[str] = []

    async def start(self, file_size_limit: int | None = None) -> None:
        def limit() -> None:  # in the child, before exec: Python ignores SIGXFSZ, so a write fails with EFBIG
            if file_size_limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

        self.proc = subprocess.Popen([sys.executable, "antex.py", "--config", str(self.config), "serve"], cwd=ROOT,
                                     env=clean_env(ANTEX_UPSTREAM_KEY=DEFAULT_API_KEY), preexec_fn=limit,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, self.printed
                try:
                    async with http.get(self.url + "/healthz") as resp:
                        if resp.status in (200, 503):  # 503: serving, and saying the store fails
                            await asyncio.sleep(0.4)  # the key watcher has loaded every key
                            return
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
        raise AssertionError("antex serve did not come up:\n" + self.printed)

    def _drain(self, out) -> None:
        with out:
            self.output.extend(out)

    def wait(self, timeout_s: float = 60) -> int:
        code = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=10)
        return code

    @property
    def printed(self) -> str:
        return "".join(self.output)

    def sigterm(self) -> tuple[int, float]:
        """Stop it; returns (exit code, seconds it took)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.wait()
        return code, time.monotonic() - started


@pytest.fixture
async def server(tmp_path: Path, fake_upstream: FakeAnthropic):
    (tmp_path / "data").mkdir()
    made = Server(tmp_path / "data", fake_upstream.url)
    yield made
    if made.proc is not None:
        stop(made.proc)
        made.wait()


async def post(http: aiohttp.ClientSession, url: str, key: str, stream: bool = False) -> tuple[int, dict | bytes]:
    async with http.post(url + "/v1/messages", json=sample_body(stream=stream), headers={"x-api-key": key}) as resp:
        body = await resp.read()
        return resp.status, orjson.loads(body) if resp.status != 200 else body


async def health(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/healthz") as resp:
            return resp.status, await resp.json()


async def wait_health(url: str, status: int, within_s: float) -> dict:
    deadline = time.monotonic() + within_s
    while True:
        found, body = await health(url)
        if found == status:
            return body
        assert time.monotonic() < deadline, f"/healthz still {found} {body} after {within_s} s"
        await asyncio.sleep(0.1)


async def written(server: Server, count: int) -> None:
    deadline = time.monotonic() + 5
    while server.rows("SELECT COUNT(*) FROM events") != [(count,)]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


def hold_write_lock(database: Path) -> sqlite3.Connection:
    """Another process's writer in the middle of a transaction: SQLite's write lock, held."""
    conn = sqlite3.connect(database, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


async def test_a_locked_database_is_served_from_the_journal_and_written_once_it_is_free(server: Server) -> None:
    key = await insert_key(str(server.database), "alice", "pro", {"max_concurrent": 0})
    await server.start()
    async with aiohttp.ClientSession() as http:
        assert (await post(http, server.url, key))[0] == 200
        await written(server, 1)
        lock = hold_write_lock(server.database)
        for _ in range(10):  # the journal takes them: served as usual
            assert (await post(http, server.url, key, stream=True))[0] == 200
        problem = await wait_health(server.url, 503, within_s=5)
        assert problem["status"] == "degraded" and problem["ledger"]["unwritten_charges"] == 10
        await asyncio.sleep(3)  # several retries, with backoff
        lock.rollback()
        lock.close()
        await wait_health(server.url, 200, within_s=6)
    assert server.rows("SELECT COUNT(*), SUM(outcome = 'complete') FROM events") == [(11, 11)]
    assert server.sigterm()[0] == 0  # (and all it printed is read)
    failed = [line for line in server.output if "writing to SQLite failed" in line]
    assert len(failed) == 1 and "database is locked" in failed[0], server.printed
    assert len([line for line in server.output if "writing to SQLite works again" in line]) == 1, server.printed
    assert "Traceback" not in server.printed


async def test_a_stop_while_the_database_is_locked_is_bounded_and_a_later_start_writes_the_rest(server: Server) -> None:
    key = await insert_key(str(server.database), "alice", "pro", {"max_concurrent": 0})
    await server.start()
    lock = hold_write_lock(server.database)
    try:
        async with aiohttp.ClientSession() as http:
            statuses = await asyncio.gather(*(post(http, server.url, key, stream=n % 2 == 0) for n in range(12)))
        assert [status for status, _ in statuses] == [200] * 12
        code, took_s = server.sigterm()
        assert took_s < STOP_BOUND_S, server.printed
        assert code == 0, server.printed
        assert "stopping with 12 charges SQLite did not take" in server.printed
        left = journal.read_open(journal.path_for(str(server.database)))
        assert len(left) == 12 and all(request.charged for request in left)  # each with its exact credit event

        await server.start()  # still locked: it serves, keeps them in the journal, and says so
        problem = await wait_health(server.url, 503, within_s=5)
        assert problem["ledger"]["unwritten_charges"] == 12, (problem, server.printed)
        async with aiohttp.ClientSession() as http:
            assert (await post(http, server.url, key))[0] == 200
    finally:
        lock.rollback()
        lock.close()
    await wait_health(server.url, 200, within_s=6)  # the lock is gone: what was left is written
    assert server.sigterm()[0] == 0
    events = server.rows("SELECT outcome, estimated, output_tokens FROM events")
    assert len(events) == 13 and {row[:2] for row in events} == {("complete", 0)}  # as settled, not estimated
    assert journal.read_open(journal.path_for(str(server.database))) == []
    assert "Traceback" not in server.printed


async def test_a_file_size_limit_refuses_with_503_once_the_journal_is_full(server: Server) -> None:
    """RLIMIT_FSIZE: SQLite's WAL hits it first (charges kept in memory and the journal), then the
    journal (requests refused with a clear 503). Nothing admitted is lost or charged twice."""
    key = await insert_key(str(server.database), "alice", "pro", {"max_concurrent": 0})
    await server.start(file_size_limit=48 * 1024)  # the WAL index needs 32 KiB
    served = refused = 0
    saw_unwritten = 0
    async with aiohttp.ClientSession() as http:
        for n in range(3000):
            status, body = await post(http, server.url, key)
            if status == 503:
                assert body["error"]["type"] == "api_error" and "cannot record" in body["error"]["message"]
                refused += 1
                if refused == 5:
                    break
                continue
            assert status == 200 and refused == 0, (status, body)
            served += 1
            if n % 50 == 0:
                found, problem = await health(server.url)
                if found == 503:
                    saw_unwritten = problem["ledger"]["unwritten_charges"]
    assert refused == 5 and served > 10
    assert saw_unwritten > 0
    status, problem = await health(server.url)
    assert status == 503 and problem["ledger"]["journal_error"] and problem["ledger"]["unwritten_charges"] > 0
    code, took_s = server.sigterm()
    assert took_s < STOP_BOUND_S and code == 0, server.printed
    assert len([line for line in server.output if "writing to SQLite failed" in line]) <= 2, server.printed
    assert len([line for line in server.output if "failed (OSError: [Errno 27] File too large)" in line]) == 1, server.printed
    assert "Traceback" not in server.printed

    await server.start()  # no limit: everything admitted is written, once
    assert server.sigterm()[0] == 0
    assert server.rows("SELECT COUNT(*) FROM events") == [(served,)]
    assert journal.read_open(journal.path_for(str(server.database))) == []


async def test_a_removed_database_directory_refuses_with_503_and_stops_in_bounded_time(server: Server) -> None:
    key = await insert_key(str(server.database), "alice", "pro", {"max_concurrent": 0})
    await server.start()
    async with aiohttp.ClientSession() as http:
        assert (await post(http, server.url, key))[0] == 200
        shutil.rmtree(server.database.parent)
        deadline = time.monotonic() + 8
        while (status := (await post(http, server.url, key))[0]) == 200:  # until the writer notices
            assert time.monotonic() < deadline, "still accepting requests it cannot record"
            await asyncio.sleep(0.1)
        assert status == 503
    problem = await wait_health(server.url, 503, within_s=5)
    assert problem["ledger"]["unwritten_charges"] > 0 and "removed" in problem["ledger"]["journal_error"]
    code, took_s = server.sigterm()
    assert took_s < STOP_BOUND_S, server.printed
    assert "Traceback" not in server.printed


def overwrite(database: Path, data: dict[Path, bytes] | None = None) -> dict[Path, bytes]:
    """Write garbage over the database's files in place (the same files, so every open connection
    reads it: "file is not a database"), or write `data` back; returns what they held."""
    held = {}
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        held[path] = path.read_bytes()
        with path.open("r+b") as handle:
            handle.write(data[path] if data else b"\xa5" * len(held[path]))
    return held


async def test_an_unreadable_database_answers_503_in_each_routes_shape_and_logs_once(server: Server) -> None:
    alice = await insert_key(str(server.database), "alice", "pro", {"max_concurrent": 0})
    bob = await insert_key(str(server.database), "bob", "pro", {"max_concurrent": 0})
    await server.start()
    async with aiohttp.ClientSession() as http:
        async with http.post(server.url + "/v1/responses", json={"model": "claude-sonnet-4-6", "input": "hi"},
                             headers={"authorization": f"Bearer {alice}"}) as resp:
            assert resp.status == 200
            response_id = (await resp.json())["id"]
        assert (await post(http, server.url, alice))[0] == 200
        await written(server, 2)
        saved = overwrite(server.database)
        calls = [("POST", "/v1/messages", bob, sample_body(), "anthropic"),
                 ("POST", "/v1/chat/completions", bob, {"model": "claude-sonnet-4-6",
                                                        "messages": [{"role": "user", "content": "hi"}]}, "openai"),
                 ("GET", "/v1/usage", bob, None, "anthropic"),
                 ("GET", "/v1/usage/activity", alice, None, "anthropic"),
                 ("GET", f"/v1/responses/{response_id}", alice, None, "openai"),
                 ("DELETE", f"/v1/responses/{response_id}", alice, None, "openai")] * 3
        for method, path, key, body, shape in calls:
            async with http.request(method, server.url + path, json=body, headers={"x-api-key": key}) as resp:
                answer = await resp.json()
                assert resp.status == 503 and resp.headers["retry-after"].isdigit(), (path, answer)
            assert answer["error"]["type"] == "api_error" and "try again" in answer["error"]["message"], answer
            assert (answer.get("type") == "error") == (shape == "anthropic"), (path, answer)
        overwrite(server.database, saved)
        assert (await post(http, server.url, bob))[0] == 200  # readable again
    assert server.sigterm()[0] == 0
    assert "Traceback" not in server.printed
    failed = [line for line in server.output if "reading SQLite failed" in line]
    assert len(failed) == 1 and "file is not a database" in failed[0], server.printed
    assert len([line for line in server.output if "reading SQLite works again" in line]) == 1, server.printed
    assert key_free(server.printed, alice, bob)


def key_free(printed: str, *keys: str) -> bool:
    return not any(key in printed for key in keys)
