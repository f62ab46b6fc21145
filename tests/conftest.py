"""Fixtures that build real things: a temp SQLite file, the fake upstream on loopback, the real
app on a real listening port, and keys created the way the CLI creates them."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from aiohttp import web

from antex import store
from antex.app import make_app
from antex.appkeys import KEYS, LEDGER
from antex.auth import hash_key, new_key, visible_prefix
from antex.config import Config, merge_documents, default_document, from_document
from tests.fake_anthropic import DEFAULT_API_KEY, FakeAnthropic

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's config, keys or working directory."""
    for name in list(os.environ):
        if name.startswith(("ANTEX_", "ANTHROPIC_", "OPENAI_")):
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


def build_config(database: Path, upstream_url: str, **sections: dict[str, Any]) -> Config:
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
    conn = await store.connect(database)
    try:
        s = store.Store(conn)
        key = new_key()
        key_id = await s.insert_key(name, visible_prefix(key), hash_key(key), plan, time.time())
        if limits:
            await s.update_key(key_id, time.time(), limits=limits)
    finally:
        await conn.close()
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
        conn = await store.connect(self.database)
        try:
            return [event async for event in store.Store(conn).iter_events(None, None)]
        finally:
            await conn.close()

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

    async def start(database: str = "antex.db", **sections: dict[str, Any]) -> Gateway:
        """One server per database (a second is refused): give a second gateway its own `database`."""
        config = build_config(tmp_path / database, fake_upstream.url, **sections)
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
