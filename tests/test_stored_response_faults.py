"""Stored responses when the store fails. They ride along with the ledger's writer, never in the
credit events' transaction: a write the store refuses on its own account (a NUL PostgreSQL text
refuses, a broken constraint) is dropped with one log line, and billing goes on; a response holding
NULs is kept intact; while the store is down, those waiting are bounded, and a GET or DELETE that
needs the writer answers 503 with retry-after in bounded time."""
from __future__ import annotations

import asyncio
import logging
import re
import time

import aiohttp
import pytest

from antex import ride_along
from antex.appkeys import LEDGER, RESPONSES
from antex.responses_store import FLUSH_WAIT_S
from tests.conftest import Gateway, GatewayFactory
from tests.fake_replies import text_reply
from tests.test_store_faults import hold_write_lock

MODEL = "claude-sonnet-4-6"


@pytest.fixture(params=["sqlite", "postgres"])
def database(request) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return "antex.db"


@pytest.fixture
async def gateway_on(database: str, make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway(database)


async def call(http: aiohttp.ClientSession, method: str, url: str, key: str, body: dict | None = None) -> tuple[int, dict]:
    async with http.request(method, url, json=body, headers={"authorization": f"Bearer {key}"}) as resp:
        return resp.status, await resp.json()


async def flushed(gateway: Gateway) -> None:
    """Every write handed to the ledger is committed (a batch retried forever fails this)."""
    await asyncio.wait_for(gateway.app[LEDGER].flush(), 5)


async def test_a_response_holding_nuls_is_stored_and_read_back_intact(gateway_on: Gateway) -> None:
    gateway = gateway_on
    key = await gateway.create_key("alice")
    gateway.fake.queue(text_reply("one\u0000two"), text_reply("Next."))
    question = {"type": "message", "role": "user", "id": "msg_nul\u0000id", "content": "a\u0000b"}
    async with aiohttp.ClientSession() as http:
        status, made = await call(http, "POST", gateway.url + "/v1/responses", key,
                                  {"model": MODEL, "input": [question]})
        assert status == 200, made
        assert made["output"][0]["content"][0]["text"] == "one\u0000two"
        await flushed(gateway)
        status, got = await call(http, "GET", f"{gateway.url}/v1/responses/{made['id']}", key)
        assert status == 200 and got == made
        status, items = await call(http, "GET", f"{gateway.url}/v1/responses/{made['id']}/input_items", key)
        assert status == 200 and [item["id"] for item in items["data"]] == ["msg_nul\u0000id"]
        assert items["data"][0]["content"][0]["text"] == "a\u0000b"
        # the item is found by its id, NUL and all
        status, second = await call(http, "POST", gateway.url + "/v1/responses", key, {
            "model": MODEL, "input": [{"type": "item_reference", "id": "msg_nul\u0000id"}]})
        assert status == 200, second
    assert gateway.fake.requests[-1].json["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a\u0000b"}]}]
    assert len(await gateway.events()) == 2
    async with aiohttp.ClientSession() as http, http.get(gateway.url + "/healthz") as resp:
        assert resp.status == 200


async def test_billing_goes_on_while_a_ride_along_is_poisoned(gateway_on: Gateway, caplog) -> None:
    gateway = gateway_on
    key = await gateway.create_key("alice")
    sql = gateway.app[RESPONSES].sql
    # An item of a response that does not exist: its foreign key refuses it, whatever is retried.
    poisoned = [(sql.INSERT_ITEM, ("resp_never_made", 0, 0, 1, "secret_item", '{"text": "secret content"}'))]
    gateway.fake.queue(*(text_reply(f"Answer {n}.") for n in range(3)))
    with caplog.at_level(logging.INFO):
        async with aiohttp.ClientSession() as http:
            status, first = await call(http, "POST", gateway.url + "/v1/responses", key, {"model": MODEL, "input": "0"})
            assert status == 200
            gateway.app[LEDGER].execute_soon(poisoned)
            for n in (1, 2):
                assert (await call(http, "POST", gateway.url + "/v1/responses", key, {"model": MODEL, "input": str(n)}))[0] == 200
            await flushed(gateway)
            status, got = await call(http, "GET", f"{gateway.url}/v1/responses/{first['id']}", key)
            assert status == 200 and got == first
            async with http.get(gateway.url + "/healthz") as resp:
                assert resp.status == 200
    assert len(await gateway.events()) == 3
    dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1, caplog.text
    assert "secret" not in caplog.text and key not in caplog.text
    assert "Traceback" not in caplog.text


async def test_get_and_delete_answer_503_in_bounded_time_while_the_store_is_locked(gateway: Gateway, caplog) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(text_reply("Kept."), text_reply("Waiting."))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        status, kept = await call(http, "POST", gateway.url + "/v1/responses", key, {"model": MODEL, "input": "a"})
        assert status == 200
        await flushed(gateway)
        lock = hold_write_lock(gateway.database)
        try:
            status, waiting = await call(http, "POST", gateway.url + "/v1/responses", key, {"model": MODEL, "input": "b"})
            assert status == 200
            for method, response_id in (("DELETE", kept["id"]), ("GET", waiting["id"])):
                started = time.monotonic()
                async with http.request(method, f"{gateway.url}/v1/responses/{response_id}",
                                        headers={"authorization": f"Bearer {key}"}) as resp:
                    body = await resp.json()
                    assert resp.status == 503 and resp.headers["retry-after"].isdigit(), (method, body)
                assert body["error"]["type"] == "api_error" and "try again" in body["error"]["message"]
                assert time.monotonic() - started < FLUSH_WAIT_S + 2
        finally:
            lock.rollback()
            lock.close()
        await flushed(gateway)  # the store is back: the deletion queued is done, the response kept
        assert (await call(http, "GET", f"{gateway.url}/v1/responses/{kept['id']}", key))[0] == 404
        status, got = await call(http, "GET", f"{gateway.url}/v1/responses/{waiting['id']}", key)
        assert status == 200 and got == waiting
    assert "Traceback" not in caplog.text


async def test_waiting_writes_are_bounded_and_their_drops_counted(gateway: Gateway, caplog, monkeypatch) -> None:
    """While the store is locked, stored responses wait at most MAX_PENDING; the oldest go, said
    once, and counted once the store takes writes again. Billing is never held back."""
    monkeypatch.setattr(ride_along, "MAX_PENDING", 3)
    key = await gateway.create_key("alice")
    gateway.fake.queue(*(text_reply(f"Answer {n}.") for n in range(5)))
    lock = hold_write_lock(gateway.database)
    made = []
    try:
        async with aiohttp.ClientSession() as http:
            for n in range(5):
                status, body = await call(http, "POST", gateway.url + "/v1/responses", key, {"model": MODEL, "input": str(n)})
                assert status == 200
                made.append(body["id"])
        assert len(gateway.app[LEDGER]._batch.ride_alongs) + len(gateway.app[LEDGER]._writing.ride_alongs) <= 3
    finally:
        lock.rollback()
        lock.close()
    await flushed(gateway)
    async with aiohttp.ClientSession() as http:
        found = [(await call(http, "GET", f"{gateway.url}/v1/responses/{rid}", key))[0] for rid in made]
    assert found == [404, 404, 200, 200, 200]
    assert len(await gateway.events()) == 5
    assert len([r for r in caplog.records if "dropping the oldest" in r.getMessage()]) == 1, caplog.text
    (counted,) = [r.getMessage() for r in caplog.records if "were dropped meanwhile" in r.getMessage()]
    assert int(re.search(r"; (\d+) waiting writes", counted)[1]) >= 2  # (and the startup prune, if it was waiting)
