"""The rest of the API: models (both SDKs), usage, count_tokens, health and Claude Code's extras."""
from __future__ import annotations

import asyncio

import anthropic
import openai
import orjson
import pytest
from aiohttp import ClientSession

from tests.conftest import Gateway, GatewayFactory, sample_body
from tests.fake_replies import text_reply


async def get(gateway: Gateway, path: str, key: str | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
    headers = {"x-api-key": key} if key else {}
    async with ClientSession() as http:
        async with http.request(method, gateway.url + path, headers=headers) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.read()


async def test_models_parse_in_both_sdks_and_follow_the_plan(gateway: Gateway) -> None:
    starter = await gateway.create_key("bob", plan="starter")
    async with anthropic.AsyncAnthropic(base_url=gateway.url, api_key=starter, max_retries=0) as client:
        page = await client.models.list()
        ids = [m.id for m in page.data]
        one = await client.models.retrieve("claude-haiku-4-5")
    assert ids and all(not i.startswith("claude-opus") for i in ids)
    assert "claude-sonnet-4-6" in ids
    assert one.display_name == "Claude Haiku 4.5" and one.created_at.year == 2025
    async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=starter, max_retries=0) as client:
        listed = [m async for m in client.models.list()]
        assert sorted(m.id for m in listed) == sorted(ids)
        assert all(m.owned_by == "anthropic" and m.created > 0 for m in listed)
        with_alias = await client.models.retrieve("sonnet")
        assert with_alias.id == "claude-sonnet-4-6"
    status, _, body = await get(gateway, "/v1/models/claude-opus-4-6", starter)
    assert status == 404 and orjson.loads(body)["error"]["type"] == "not_found_error"
    status, _, body = await get(gateway, "/v1/models")
    assert status == 401


async def test_usage_is_percentages_never_credits(gateway: Gateway) -> None:
    key = await gateway.create_key("alice", credits_5h=10.0, credits_7d=100.0)
    gateway.fake.queue(text_reply("ok", input_tokens=10000, output_tokens=1000))  # 3 + 1.5 = 4.5 credits
    async with ClientSession() as http:
        async with http.post(gateway.url + "/v1/messages", json=sample_body(), headers={"x-api-key": key}) as resp:
            assert resp.status == 200
    charged_at = gateway.clock()
    gateway.clock.advance(100)
    status, headers, raw = await get(gateway, "/v1/usage", key)
    assert status == 200
    body = orjson.loads(raw)
    assert body["key"]["name"] == "alice" and body["key"]["plan"] == "pro" and key.startswith(body["key"]["prefix"])
    assert len(body["key"]["prefix"]) == len("sk_live_AbCd")
    assert body["key"]["max_concurrent"] == 8  # pro's cap: 0 would mean none (the dashboard flags it)
    five, seven = body["five_hour"], body["seven_day"]
    assert five["used_percent"] == 45.0 and seven["used_percent"] == 4.5
    assert five["resets_at"] == int(charged_at) + 5 * 3600
    assert seven["resets_at"] == int(charged_at) + 7 * 86400
    assert five["available_at"] is None
    assert five["schedule"] == [{"at": int(charged_at) + 5 * 3600, "used_percent": 0.0}]
    assert b"credit" not in raw
    assert headers["anthropic-ratelimit-unified-5h-utilization"] == "0.4500"
    # Activity: requests per model as a share of the window (read from SQLite, once written).
    await gateway.flush()
    status, _, raw = await get(gateway, "/v1/usage/activity", key)
    activity = orjson.loads(raw)
    assert activity["five_hour"]["by_model"] == [{"model": "claude-sonnet-4-6", "requests": 1, "percent": 45.0}]


async def test_usage_of_a_full_window_says_when_it_opens(gateway: Gateway) -> None:
    key = await gateway.create_key("alice", credits_5h=1.0)
    first = gateway.clock()
    for _ in range(2):  # 0.6 credits each: the second fills the window
        gateway.fake.queue(text_reply("ok", input_tokens=2000, output_tokens=0))
        async with ClientSession() as http:
            async with http.post(gateway.url + "/v1/messages", json=sample_body(), headers={"x-api-key": key}) as resp:
                assert resp.status == 200
        gateway.clock.advance(600)  # further apart than one step of the 5-hour chart (150 s)
    _, _, raw = await get(gateway, "/v1/usage", key)
    five = orjson.loads(raw)["five_hour"]
    assert five["used_percent"] == 120.0 and five["status"] == "rejected"
    # Once the first charge leaves, 60 % remain: below 100 %, so that is when it opens.
    assert five["available_at"] == int(first) + 5 * 3600
    assert [p["used_percent"] for p in five["schedule"]] == [60.0, 0.0]


async def test_count_tokens_is_forwarded_and_not_metered(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    async with anthropic.AsyncAnthropic(base_url=gateway.url, api_key=key, max_retries=0) as client:
        counted = await client.messages.count_tokens(model="claude-sonnet-4-6",
                                                     messages=[{"role": "user", "content": "hello"}])
    assert counted.input_tokens > 0
    assert gateway.fake.requests[-1].path == "/v1/messages/count_tokens"
    await gateway.flush()
    _, _, raw = await get(gateway, "/v1/usage", key)
    assert orjson.loads(raw)["five_hour"]["used_percent"] == 0.0


async def test_count_tokens_counts_the_client_address_against_max_ips(make_gateway: GatewayFactory) -> None:
    """A leaked key's new addresses count on count_tokens too, which still charges nothing."""
    gateway = await make_gateway(server={"trusted_proxies": ["127.0.0.1/32"]})
    key = await gateway.create_key("alice", max_ips=1)
    body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hello"}]}

    async def post(path: str, address: str, payload: dict) -> tuple[int, dict]:
        async with ClientSession() as http:
            async with http.post(gateway.url + path, json=payload,
                                 headers={"x-api-key": key, "x-forwarded-for": address}) as resp:
                return resp.status, await resp.json()

    assert (await post("/v1/messages/count_tokens", "203.0.113.5", body))[0] == 200
    status, refused = await post("/v1/messages/count_tokens", "198.51.100.9", body)
    assert status == 403 and refused["error"]["type"] == "ip_limit_reached", refused
    status, refused = await post("/v1/messages", "198.51.100.9", {**body, "max_tokens": 16})
    assert status == 403 and refused["error"]["type"] == "ip_limit_reached", refused
    assert (await post("/v1/messages/count_tokens", "203.0.113.5", body))[0] == 200
    assert [request.path for request in gateway.fake.requests] == ["/v1/messages/count_tokens"] * 2
    assert await gateway.events() == []  # never charged


@pytest.mark.parametrize("max_concurrent", [3, 0])
async def test_requests_in_flight_overshoot_a_window_by_at_most_the_readme_bound(
        gateway: Gateway, max_concurrent: int) -> None:
    """README, "How far past 100 %": a window ends at most max_concurrent x the largest request past
    its limit; with no cap, as far as the client's concurrency goes."""
    key = await gateway.create_key("alice", credits_5h=30, credits_7d=1000, max_concurrent=max_concurrent)
    costly = dict(input_tokens=10_000, output_tokens=0)  # 3 credits each on Sonnet: 10 % of the window
    gateway.fake.queue(*[text_reply("ok", **costly)] * 9)
    async with ClientSession() as http:
        async def post() -> int:
            async with http.post(gateway.url + "/v1/messages", json=sample_body(), headers={"x-api-key": key}) as resp:
                await resp.read()
                return resp.status

        assert [await post() for _ in range(9)] == [200] * 9  # 90 %: still admitted
        gateway.fake.queue(*[text_reply("ok", delay_s=0.1, **costly)] * 20)
        statuses = await asyncio.gather(*[post() for _ in range(20)])
    admitted = statuses.count(200)
    await gateway.flush()
    _, _, raw = await get(gateway, "/v1/usage", key)
    used = orjson.loads(raw)["five_hour"]["used_percent"]
    assert used == pytest.approx(90 + 10 * admitted)
    if max_concurrent:
        assert admitted == max_concurrent and 100 < used <= 100 + max_concurrent * 10
    else:
        assert admitted == 20 and used == pytest.approx(290)  # nothing bounds it but the client


async def test_health_preconnect_and_telemetry_are_cheap(gateway: Gateway) -> None:
    status, _, body = await get(gateway, "/healthz")
    health = orjson.loads(body)
    assert status == 200 and health["status"] == "ok" and [u["name"] for u in health["upstreams"]] == ["main"]
    for path in ("/", "/api/hello"):
        status, _, _ = await get(gateway, path, method="HEAD")
        assert status == 200
    async with ClientSession() as http:
        async with http.post(gateway.url + "/api/event_logging/batch", json={"events": [1, 2]}) as resp:
            assert resp.status == 200
    assert gateway.fake.requests == []
