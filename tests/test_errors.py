"""Every error of the seed's error reference, over raw HTTP: status, type, message, headers."""
from __future__ import annotations

import time

import orjson
import pytest
from aiohttp import ClientSession

from antex.appkeys import KEYS
from tests.conftest import Gateway, GatewayFactory, sample_body
from tests.fake_replies import text_reply


async def post(gateway: Gateway, key: str | None, body: object = None, *, raw: bytes | None = None,
               path: str = "/v1/messages", headers: dict | None = None) -> tuple[int, dict, dict]:
    all_headers = {"content-type": "application/json", **(headers or {})}
    if key is not None:
        all_headers["x-api-key"] = key
    data = raw if raw is not None else orjson.dumps(body if body is not None else sample_body())
    async with ClientSession() as http:
        async with http.post(gateway.url + path, data=data, headers=all_headers) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, orjson.loads(await resp.read())


def error_of(body: dict) -> tuple[str, str]:
    assert body["type"] == "error" and body["request_id"]
    return body["error"]["type"], body["error"]["message"]


@pytest.mark.parametrize("headers, fragment", [
    ({}, "No API key"),
    ({"x-api-key": "nope"}, "Malformed"),
    ({"authorization": "Bearer sk_live_" + "A" * 43}, "Invalid API key"),
    ({"authorization": "Basic abc"}, "No API key"),
])
async def test_authentication_errors(gateway: Gateway, headers: dict, fragment: str) -> None:
    status, _, body = await post(gateway, None, headers=headers)
    assert status == 401
    kind, message = error_of(body)
    assert kind == "authentication_error" and fragment in message
    assert gateway.fake.requests == []


async def test_bearer_key_is_accepted(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    status, _, _ = await post(gateway, None, headers={"authorization": f"Bearer {key}"})
    assert status == 200


async def test_revoked_key(gateway: Gateway) -> None:
    from antex import store

    key = await gateway.create_key("alice")
    conn = await store.connect(gateway.database)
    await conn.execute("UPDATE keys SET status = 'revoked'")
    await conn.close()
    deadline = time.monotonic() + 1.0
    while True:
        status, _, body = await post(gateway, key)
        if status == 401 or time.monotonic() > deadline:
            break
    assert status == 401 and "revoked" in error_of(body)[1]


async def test_model_not_on_plan_and_unknown_model(gateway: Gateway) -> None:
    key = await gateway.create_key("bob", plan="starter")
    status, _, body = await post(gateway, key, sample_body(model="claude-opus-4-6"))
    assert status == 403
    assert error_of(body)[0] == "permission_error" and "starter" in error_of(body)[1]
    status, _, body = await post(gateway, key, sample_body(model="gpt-4o"))
    assert status == 404 and error_of(body)[0] == "not_found_error"


async def test_quarantined_key(gateway: Gateway) -> None:
    from antex import store

    key = await gateway.create_key("alice")
    conn = await store.connect(gateway.database)
    await conn.execute("UPDATE keys SET status = 'quarantined', status_reason = 'leaked on a forum'")
    await conn.close()
    await gateway.app[KEYS].refresh()
    status, _, body = await post(gateway, key)
    assert status == 403
    kind, message = error_of(body)
    assert kind == "key_quarantined" and "leaked on a forum" in message


async def test_max_tokens_over_the_cap_names_the_cap_on_a_refusing_plan(gateway: Gateway) -> None:
    key = await gateway.create_key("bob", plan="starter", max_tokens_over="refuse")
    status, _, body = await post(gateway, key, sample_body(max_tokens=32001))
    assert status == 400
    kind, message = error_of(body)
    assert kind == "max_tokens_too_large" and message == (
        "max_tokens 32001 is over your plan's cap of 32000. Send max_tokens of 32000 or less.")
    assert gateway.fake.requests == []


async def test_max_tokens_over_the_models_limit_names_that_limit(gateway: Gateway) -> None:
    key = await gateway.create_key("carol", plan="max")  # cap 128000, over Haiku's 64000
    status, _, body = await post(gateway, key, sample_body(model="claude-haiku-4-5", max_tokens=64001))
    assert status == 400
    kind, message = error_of(body)
    assert kind == "max_tokens_too_large" and "claude-haiku-4-5's output limit of 64000" in message
    assert gateway.fake.requests == []


@pytest.mark.parametrize("raw, fragment", [
    (b"", "empty"),
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'"text"', "JSON object"),
    (b'{"messages": []}', "model"),
    (b'{"model": 5, "max_tokens": 5, "messages": []}', "model"),
    (b'{"model": "claude-sonnet-4-6", "max_tokens": 5}', "messages"),
    (b'{"model": "claude-sonnet-4-6", "max_tokens": "5", "messages": []}', "max_tokens"),
    (b'{"model": "claude-sonnet-4-6", "max_tokens": true, "messages": []}', "max_tokens"),
    (b'{"model": "claude-sonnet-4-6", "max_tokens": 0, "messages": []}', "max_tokens"),
    (b'{"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": {}}', "messages"),
    (b'{"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [], "stream": "yes"}', "stream"),
    (b'\xff\xfe{"model"}', "not valid JSON"),
])
async def test_invalid_requests(gateway: Gateway, raw: bytes, fragment: str) -> None:
    key = await gateway.create_key("alice")
    status, _, body = await post(gateway, key, raw=raw)
    assert status == 400
    kind, message = error_of(body)
    assert kind == "invalid_request_error" and fragment in message
    assert gateway.fake.requests == []


async def test_payload_too_large_by_content_length_and_chunked(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(server={"max_body_bytes": 1024})
    key = await gateway.create_key("alice")
    status, _, body = await post(gateway, key, raw=b"x" * 2048)
    assert status == 413 and error_of(body)[0] == "payload_too_large"

    async def chunks():
        for _ in range(64):
            yield b"y" * 512

    async with ClientSession() as http:
        async with http.post(gateway.url + "/v1/messages", data=chunks(),
                             headers={"x-api-key": key, "content-type": "application/json"}) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"]["type"] == "payload_too_large"
    assert gateway.fake.requests == []


async def test_unknown_route_and_method(gateway: Gateway) -> None:
    async with ClientSession() as http:
        async with http.get(gateway.url + "/v1/nothing") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["type"] == "not_found_error"
        async with http.get(gateway.url + "/v1/messages") as resp:
            assert resp.status == 405
            assert (await resp.json())["type"] == "error"


async def test_upstream_unreachable_is_a_clear_502(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(upstream={"base_url": "http://127.0.0.1:9"})
    key = await gateway.create_key("alice")
    status, _, body = await post(gateway, key)
    assert status == 502
    kind, message = error_of(body)
    assert kind == "api_error" and "reach the upstream" in message


async def test_ip_limit_then_automatic_quarantine(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(server={"trusted_proxies": ["127.0.0.1/32"]},
                                 quarantine={"ip_limit_hits": 3, "within_s": 3600})
    key = await gateway.create_key("alice", max_ips=2)
    for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.1"):
        status, _, _ = await post(gateway, key, headers={"x-forwarded-for": ip})
        assert status == 200
    for attempt in range(3):
        status, _, body = await post(gateway, key, headers={"x-forwarded-for": f"10.0.1.{attempt}"})
        assert status == 403 and error_of(body)[0] == "ip_limit_reached"
        assert "2 different IP addresses" in error_of(body)[1]
    # The third refusal quarantined the key: every address is refused now, within a second.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        status, _, body = await post(gateway, key, headers={"x-forwarded-for": "10.0.0.1"})
        if status == 403 and error_of(body)[0] == "key_quarantined":
            break
    assert error_of(body)[0] == "key_quarantined" and "automatic" in error_of(body)[1]


async def test_spoofed_forwarded_for_from_untrusted_peer_is_ignored(gateway: Gateway) -> None:
    key = await gateway.create_key("alice", max_ips=1)
    for ip in ("1.1.1.1", "2.2.2.2", "3.3.3.3"):
        status, _, _ = await post(gateway, key, headers={"x-forwarded-for": ip})
        assert status == 200  # all count as 127.0.0.1, the real peer


async def test_rate_limit_5h_window_full(gateway: Gateway) -> None:
    key = await gateway.create_key("alice", credits_5h=1.0)
    # 1000 input tokens on sonnet = 0.3 credits; 500 output = 0.75: one request fills the window.
    gateway.fake.queue(text_reply("ok", input_tokens=1000, output_tokens=500))
    status, headers, _ = await post(gateway, key)
    assert status == 200
    charged_at = gateway.clock()
    gateway.clock.advance(60)
    status, headers, body = await post(gateway, key)
    assert status == 429
    kind, message = error_of(body)
    assert kind == "rate_limit_error" and "5-hour" in message
    retry_after = int(headers["retry-after"])
    assert retry_after == int(charged_at + 5 * 3600 - gateway.clock())
    assert headers["x-should-retry"] == "false"
    assert headers["anthropic-ratelimit-unified-status"] == "rejected"
    assert headers["anthropic-ratelimit-unified-5h-status"] == "rejected"
    assert len(gateway.fake.requests) == 1
    # Exactly when the charge ages out, the window opens again.
    gateway.clock.advance(retry_after)
    status, _, _ = await post(gateway, key)
    assert status == 200


async def test_rate_limit_7d_window_full_short_wait_is_retryable(gateway: Gateway) -> None:
    key = await gateway.create_key("alice", credits_7d=1.0)
    gateway.fake.queue(text_reply("ok", input_tokens=1000, output_tokens=500))
    assert (await post(gateway, key))[0] == 200
    gateway.clock.advance(7 * 86400 - 30)  # the charge leaves the 7-day window in 30 s
    status, headers, body = await post(gateway, key)
    assert status == 429
    assert "weekly" in error_of(body)[1]
    assert int(headers["retry-after"]) == 30
    assert "x-should-retry" not in headers


async def test_ratelimit_headers_on_every_keyed_response(gateway: Gateway) -> None:
    key = await gateway.create_key("alice", credits_5h=10.0, credits_7d=100.0)
    gateway.fake.queue(text_reply("ok", input_tokens=10000, output_tokens=3000))  # 3 + 4.5 = 7.5 credits
    await post(gateway, key)
    status, headers, _ = await post(gateway, key)
    assert status == 200
    assert headers["anthropic-ratelimit-unified-5h-utilization"] == "0.7500"
    assert headers["anthropic-ratelimit-unified-7d-utilization"] == "0.0750"
    assert headers["anthropic-ratelimit-unified-status"] == "allowed"
    assert headers["anthropic-ratelimit-unified-5h-status"] == "allowed"
    assert abs(int(headers["anthropic-ratelimit-unified-5h-reset"]) - (gateway.clock() + 5 * 3600)) <= 1
    # Errors after authentication carry them too.
    status, headers, _ = await post(gateway, key, sample_body(model="nope"))
    assert status == 404 and "anthropic-ratelimit-unified-5h-utilization" in headers


async def test_concurrency_cap(gateway: Gateway) -> None:
    import asyncio

    key = await gateway.create_key("alice", max_concurrent=1)
    gateway.fake.queue(text_reply("slow reply here", events=3, delay_s=0.3))
    slow = asyncio.create_task(post(gateway, key))
    await gateway.fake.wait_for_requests(1)
    status, headers, body = await post(gateway, key)
    assert status == 429 and "in flight" in error_of(body)[1]
    await slow
    assert (await post(gateway, key))[0] == 200
