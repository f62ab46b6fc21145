"""Several Antex instances on one PostgreSQL database act as one gateway (in this process: real
apps on real ports, a real PostgreSQL server, the fake upstream): windows, max_ips,
max_concurrent and key changes hold across instances."""
from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiohttp import ClientSession

from antex import store
from antex.appkeys import CLUSTER, KEYS, LEDGER
from antex.auth import hash_key
from tests.conftest import Gateway, GatewayFactory, sample_body
from tests.fake_replies import text_reply

COST = dict(input_tokens=2000, output_tokens=0)  # 0.6 credits on claude-sonnet-4-6


async def post(gateway: Gateway, key: str, *, ip: str | None = None, **body) -> tuple[int, dict]:
    headers = {"x-api-key": key} | ({"x-forwarded-for": ip} if ip else {})
    async with ClientSession() as http:
        async with http.post(gateway.url + "/v1/messages", json=sample_body(**body), headers=headers) as resp:
            return resp.status, orjson.loads(await resp.read())


async def instances(make_gateway: GatewayFactory, url: str, count: int, **sections) -> list[Gateway]:
    return [await make_gateway(database=url, **sections) for _ in range(count)]


def key_id_of(gateway: Gateway, key: str) -> int:
    return gateway.app[KEYS].by_hash[hash_key(key)].id


async def until(check, timeout_s: float = 1.0, what: str = "") -> float:
    """Wait until check() is true (bounded); returns how long it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.002)
    return time.monotonic() - started


async def admitted_until_refused(gateways: list[Gateway], key: str) -> int:
    """Requests sent round-robin until one is refused for a full window; each charge waits until
    every instance knows it (which is what the test of "within 100 ms" measures)."""
    for sent in range(100):
        gateway = gateways[sent % len(gateways)]
        gateway.fake.queue(text_reply("ok", **COST))
        status, body = await post(gateway, key)
        if status == 429:
            assert body["error"]["type"] == "rate_limit_error"
            return sent
        assert status == 200, body
        key_id = key_id_of(gateway, key)
        used = gateway.app[LEDGER].states[key_id].five_hour.expire(gateway.clock())
        for other in gateways:
            state = await other.app[LEDGER].state(key_id)
            await until(lambda: state.five_hour.expire(other.clock()) == used, what="a charge reaching every instance")
    raise AssertionError("never refused")


async def test_a_key_is_refused_at_the_same_total_on_one_two_and_three_instances(
        make_gateway: GatewayFactory, postgres_server, tmp_path) -> None:
    totals = []
    for count in (1, 2, 3):
        url = postgres_server.url(postgres_server.new_database("antex_template"))
        gateways = await instances(make_gateway, url, count)
        key = await gateways[0].create_key("alice", credits_5h=3.0)
        for gateway in gateways:
            await gateway.app[KEYS].refresh()
        totals.append(await admitted_until_refused(gateways, key))
    assert totals == [5, 5, 5]  # 0.6 credits each against 3: the sixth finds the window full


async def test_a_charge_reaches_the_other_instances_within_100_ms(make_gateway: GatewayFactory, postgres_url: str) -> None:
    a, b = await instances(make_gateway, postgres_url, 2)
    key = await a.create_key("alice")
    await b.app[KEYS].refresh()
    # b loads the key first, so what follows reaches it through the feed, not a fresh read
    b.fake.queue(text_reply("ok", **COST))
    assert (await post(b, key))[0] == 200
    key_id = key_id_of(a, key)
    took = []
    for sent in range(2, 7):
        a.fake.queue(text_reply("ok", **COST))
        assert (await post(a, key))[0] == 200
        took.append(await until(lambda: b.app[LEDGER].states[key_id].five_hour.expire(b.clock()) == sent * 600_000))
    assert max(took) < 0.5, took  # typically a millisecond or two; generous under load
    await a.flush()
    await b.flush()
    async with ClientSession() as http:  # read from the shared database, as any instance would
        async with http.get(b.url + "/v1/usage/activity", headers={"x-api-key": key}) as resp:
            activity = await resp.json()
            assert resp.status == 200, activity
    assert activity["five_hour"]["by_model"][0]["requests"] == 6


async def test_a_revocation_from_the_cli_is_refused_by_every_instance_within_a_second(
        make_gateway: GatewayFactory, postgres_url: str) -> None:
    gateways = await instances(make_gateway, postgres_url, 3)
    key = await gateways[0].create_key("alice")
    for gateway in gateways:
        await until(lambda: hash_key(key) in gateway.app[KEYS].by_hash, what="the new key")
        assert (await post(gateway, key))[0] == 200
    s = await store.open_store(postgres_url, pool_size=1)
    try:
        (row,) = await s.find_keys("alice")
        await s.update_key(row.id, time.time(), status="revoked", status_reason=None)
    finally:
        await s.close()
    for gateway in gateways:
        await until(lambda: gateway.app[KEYS].by_hash[hash_key(key)].row.status == "revoked", what="the revocation")
        status, body = await post(gateway, key)
        assert status == 401 and "revoked" in body["error"]["message"]


async def test_max_ips_holds_across_instances(make_gateway: GatewayFactory, postgres_url: str) -> None:
    gateways = await instances(make_gateway, postgres_url, 3, server={"trusted_proxies": ["127.0.0.1/32"]})
    key = await gateways[0].create_key("alice", max_ips=2)
    for gateway in gateways:
        await gateway.app[KEYS].refresh()
    key_id = None
    for gateway, ip in zip(gateways[:2], ("203.0.113.1", "203.0.113.2")):
        assert (await post(gateway, key, ip=ip))[0] == 200
        key_id = key_id_of(gateway, key)
    third = gateways[2]
    await third.app[LEDGER].state(key_id)
    await until(lambda: len(third.app[LEDGER].states[key_id].ips) == 2, what="both IPs reaching the third instance")
    status, body = await post(third, key, ip="203.0.113.3")
    assert status == 403 and body["error"]["type"] == "ip_limit_reached"
    assert (await post(third, key, ip="203.0.113.1"))[0] == 200  # a known address, seen on another instance


async def test_max_concurrent_holds_across_instances(make_gateway: GatewayFactory, postgres_url: str) -> None:
    a, b = await instances(make_gateway, postgres_url, 2)
    key = await a.create_key("alice", max_concurrent=2)
    await b.app[KEYS].refresh()
    a.fake.queue(text_reply("slow", delay_s=1.0), text_reply("slow", delay_s=1.0))
    slow = [asyncio.create_task(post(a, key)) for _ in range(2)]
    await a.fake.wait_for_requests(2)
    key_id = key_id_of(a, key)
    await b.app[LEDGER].state(key_id)
    await until(lambda: b.app[LEDGER].states[key_id].remote_in_flight == 2, what="a's two requests in flight")
    status, body = await post(b, key)
    assert status == 429 and "in flight" in body["error"]["message"]
    await asyncio.gather(*slow)
    await until(lambda: b.app[LEDGER].states[key_id].remote_in_flight == 0, what="a's requests ending")
    b.fake.queue(text_reply("ok"))
    assert (await post(b, key))[0] == 200


async def test_healthz_says_degraded_while_the_feed_is_down(make_gateway: GatewayFactory, postgres_url: str) -> None:
    gateway = await make_gateway(database=postgres_url)
    async with ClientSession() as http:
        async with http.get(gateway.url + "/healthz") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ok"
    assert gateway.app[CLUSTER].health() is None


async def test_after_a_lost_feed_connection_the_catch_up_read_counts_what_was_missed(
        make_gateway: GatewayFactory, postgres_url: str, postgres_server) -> None:
    a, b = await instances(make_gateway, postgres_url, 2)
    key = await a.create_key("alice")
    await b.app[KEYS].refresh()
    b.fake.queue(text_reply("ok", **COST))
    assert (await post(b, key))[0] == 200  # b holds the key's windows in memory from now on
    key_id = key_id_of(b, key)
    feed = b.app[CLUSTER].feed
    database = postgres_url.rsplit("/", 1)[1]
    try:  # cut the feeds and keep them out (as a network cut would), then charge on a meanwhile
        postgres_server.psql(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
        postgres_server.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
                             f"'antex-feed' AND datname = '{database}'")
        await until(lambda: not feed.connected.is_set(), what="b noticing its feed is down")
        for _ in range(3):  # a's writer keeps the connection it has
            a.fake.queue(text_reply("ok", **COST))
            assert (await post(a, key))[0] == 200
        await a.flush()
        await asyncio.sleep(0.3)  # b's feed tries to reconnect meanwhile, and fails
        assert not feed.connected.is_set()
    finally:
        postgres_server.psql(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
    await until(lambda: feed.connected.is_set(), timeout_s=10, what="b's feed back")
    state = b.app[LEDGER].states[key_id]
    await until(lambda: state.five_hour.expire(b.clock()) == 4 * 600_000, what="b counting a's three charges")
    await asyncio.sleep(0.2)  # and not one of them twice
    assert state.five_hour.expire(b.clock()) == 4 * 600_000


async def test_stored_responses_are_shared_by_the_instances(make_gateway: GatewayFactory, postgres_url: str) -> None:
    """Made on one instance, continued, read, listed and deleted on another (PostgreSQL's dialect
    of every stored-response statement), then pruned."""
    import openai

    from antex.appkeys import RESPONSES
    from tests.test_stored_responses import MODEL, TOOLS, weather_call

    a, b = await instances(make_gateway, postgres_url, 2)
    key = await a.create_key("alice")
    await b.app[KEYS].refresh()
    a.fake.queue(weather_call(), text_reply("Sunny in Oslo."), text_reply("Bye."))
    async with openai.AsyncOpenAI(base_url=a.url + "/v1", api_key=key, max_retries=0) as on_a, \
            openai.AsyncOpenAI(base_url=b.url + "/v1", api_key=key, max_retries=0) as on_b:
        first = await on_a.responses.create(model=MODEL, input="Weather in Oslo?", tools=TOOLS)
        await a.flush()
        (call,) = [item for item in first.output if item.type == "function_call"]
        second = await on_b.responses.create(model=MODEL, tools=TOOLS, previous_response_id=first.id,
                                             input=[{"type": "function_call_output", "call_id": call.call_id,
                                                     "output": "sunny, 21 C"}])
        assert second.output_text == "Sunny in Oslo."
        sent = a.fake.requests[1].json["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "user"]  # the conversation came from a's store
        await b.flush()
        assert (await on_a.responses.retrieve(second.id)).output_text == "Sunny in Oslo."
        items = await on_a.responses.input_items.list(second.id)
        assert [item.type for item in items.data] == ["function_call_output"]
        third = await on_a.responses.create(model=MODEL, input=[{"type": "item_reference", "id": call.id},
                                                                {"role": "user", "content": "and?"}])
        assert third.output_text == "Bye."
        await on_b.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            await on_a.responses.retrieve(first.id)
    for gateway in (a, b):
        gateway.app[RESPONSES].prune()
        await gateway.flush()
        assert gateway.app[LEDGER].health() is None and gateway.app[LEDGER].store_failure.error is None


async def test_the_automatic_quarantine_counts_every_instance_s_refusals(
        make_gateway: GatewayFactory, postgres_url: str) -> None:
    a, b = await instances(make_gateway, postgres_url, 2, server={"trusted_proxies": ["127.0.0.1/32"]},
                           quarantine={"ip_limit_hits": 4, "within_s": 3600})
    key = await a.create_key("alice", max_ips=1)
    await b.app[KEYS].refresh()
    assert (await post(a, key, ip="203.0.113.1"))[0] == 200
    key_id = key_id_of(a, key)
    await b.app[LEDGER].state(key_id)
    await until(lambda: "203.0.113.1" in b.app[LEDGER].states[key_id].ips, what="the first IP on b")
    for n, gateway in enumerate((a, b, a, b)):  # two refusals on each: four in all
        status, body = await post(gateway, key, ip=f"198.51.100.{n}")
        assert status == 403 and body["error"]["type"] == "ip_limit_reached"
        await until(lambda: len(a.app[LEDGER].states[key_id].ip_refusals) + len(b.app[LEDGER].states[key_id].ip_refusals)
                    >= 2 * (n + 1) or a.app[KEYS].by_hash[hash_key(key)].row.status == "quarantined",
                    what="the refusal counted on both")
    for gateway in (a, b):
        await until(lambda: gateway.app[KEYS].by_hash[hash_key(key)].row.status == "quarantined", what="quarantined")
        status, body = await post(gateway, key, ip="203.0.113.1")
        assert status == 403 and body["error"]["type"] == "key_quarantined"
