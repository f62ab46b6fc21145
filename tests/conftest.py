"""Fixtures that build real things: a temp SQLite file, the fake upstream on loopback, the real
app on a real listening port, and keys created the way the CLI creates them."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import pytest
from aiohttp import web

from antex import store
from antex.app import make_app
from antex.appkeys import KEYS, LEDGER
from antex.auth import hash_key, new_key, visible_prefix
from antex.config import Config, merge_documents, default_document, from_document
from tests.fake_anthropic import DEFAULT_API_KEY, FakeAnthropic
from tests.postgres import PostgresServer, remove_server as remove_postgres, start_server as start_postgres

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's config, keys or working directory."""
    for name in list(os.environ):
        if name.startswith(("ANTEX_", "ANTHROPIC_", "OPENAI_", "PG")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


class FakeClock:
    """A clock the tests move by hand, so window arithmetic is exact to the second."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(float(int(time.time())))


@pytest.fixture
async def fake_upstream(aiohttp_server) -> FakeAnthropic:
    fake = FakeAnthropic()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


def build_config(database: Path | str, upstream_url: str, **sections: dict[str, Any]) -> Config:
    """The defaults, pointed at a temp database and the fake upstream, with test overrides."""
    document = merge_documents(
        default_document(),
        {
            "server": {"database": str(database)},
            "upstream": {"base_url": upstream_url, "idle_timeout_s": 5, "connect_timeout_s": 2},
        },
    )
    return from_document(merge_documents(document, sections), "<test>")


async def insert_key(
    database: str, name: str, plan: str, limits: dict[str, Any] | None = None
) -> str:
    """Create a key exactly as `antex keys create` does; returns the full key."""
    s = await store.open_store(database, pool_size=1)
    try:
        key = new_key()
        key_id = await s.insert_key(name, visible_prefix(key), hash_key(key), plan, time.time())
        if limits:
            await s.update_key(key_id, time.time(), limits=limits)
    finally:
        await s.close()
    return key


@dataclass
class Gateway:
    """A running Antex in front of the fake upstream."""

    app: web.Application
    url: str
    config: Config
    fake: FakeAnthropic
    clock: FakeClock

    async def create_key(self, name: str, plan: str = "pro", **limits: Any) -> str:
        key = await insert_key(self.config.server.database, name, plan, limits)
        await self.app[KEYS].refresh()
        return key

    async def flush(self) -> None:
        """Wait until every settled charge is in SQLite."""
        await self.app[LEDGER].flush()

    async def events(self) -> list[dict]:
        """Every credit event in the database, oldest first, once the ledger has written them."""
        await self.flush()
        s = await store.open_store(self.database, pool_size=1)
        try:
            return [event async for event in s.iter_events(None, None)]
        finally:
            await s.close()

    async def wait_for_events(self, count: int, timeout_s: float = 5.0) -> list[dict]:
        """The events once `count` exist (a stream may settle after its client has gone)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(events := await self.events()) < count:
            assert asyncio.get_running_loop().time() < deadline, f"{len(events)} of {count} events"
            await asyncio.sleep(0.05)
        return events

    @property
    def database(self) -> str:
        return self.config.server.database


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def make_gateway(
    aiohttp_server, fake_upstream: FakeAnthropic, tmp_path: Path, clock: FakeClock
) -> GatewayFactory:
    """Start a gateway with config overrides per section, e.g. make_gateway(server={...})."""

    instances = itertools.count(1)

    async def start(database: str = "antex.db", **sections: dict[str, Any]) -> Gateway:
        """One server per database (a second is refused): give a second gateway its own `database`."""
        if store.is_postgres(database):  # a PostgreSQL URL: the journal goes in tmp_path
            sections["server"] = {"journal_dir": str(tmp_path), "instance_id": f"test-{next(instances)}",
                                  **sections.get("server", {})}
        config = build_config(database if store.is_postgres(database) else tmp_path / database, fake_upstream.url,
                              **sections)
        app = make_app(config, upstream_key=DEFAULT_API_KEY, clock=clock)
        server = await aiohttp_server(app)
        return Gateway(app, str(server.make_url("")).rstrip("/"), config, fake_upstream, clock)

    return start


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway()


def sample_body(**fields: Any) -> dict[str, Any]:
    """A small valid Messages request."""
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
    }
    body.update(fields)
    return body


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the whole session (see tests/postgres.py); never skipped."""
    server = start_postgres()
    server.psql('CREATE DATABASE antex_template TEMPLATE template0')
    asyncio.run(_migrate_template(server.url("antex_template")))
    server.psql("ALTER DATABASE antex_template WITH IS_TEMPLATE true")
    yield server
    remove_postgres(server)


async def _migrate_template(url: str) -> None:
    opened = await store.open_store(url, pool_size=1)
    await opened.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh PostgreSQL database of this test's own, migrated to the latest schema."""
    return postgres_server.url(postgres_server.new_database("antex_template"))


@pytest.fixture
def empty_postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty PostgreSQL database (no schema at all)."""
    return postgres_server.url(postgres_server.new_database())


@pytest.fixture
def timeless_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Response ids start with the time (response_state.time_ordered): translations compared byte
    for byte must not differ because they straddled a millisecond."""
    monkeypatch.setattr("antex.translate.responses_stream.time_ordered", lambda stem=None: "0" * 11 + (stem or "x"))
