"""Streams stay streams: events pass as they arrive, faults end cleanly, every request is charged."""
from __future__ import annotations

import time

import orjson
from aiohttp import ClientSession

from tests.conftest import Gateway, GatewayFactory, sample_body
from tests.fake_replies import error_reply, text_reply

TEXT = "one two three four five six seven eight"



async def stream_raw(gateway: Gateway, key: str) -> tuple[int, bytes]:
    async with ClientSession() as http:
        async with http.post(gateway.url + "/v1/messages", json=sample_body(stream=True),
                             headers={"x-api-key": key}) as resp:
            return resp.status, await resp.read()


async def test_events_arrive_as_upstream_sends_them(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(text_reply(TEXT, events=4, delay_s=0.25))
    arrivals: list[tuple[float, bytes]] = []
    async with ClientSession() as http:
        started = time.monotonic()
        async with http.post(gateway.url + "/v1/messages", json=sample_body(stream=True),
                             headers={"x-api-key": key}) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            async for chunk in resp.content.iter_any():
                arrivals.append((time.monotonic() - started, chunk))
    body = b"".join(chunk for _, chunk in arrivals)
    assert b"event: message_start\n" in body and b"event: message_stop\n" in body
    # The first event reached us long before the upstream finished (about 2.5 s of delays in all).
    first_event_at = next(t for t, chunk in arrivals if b"message_start" in chunk)
    assert first_event_at < arrivals[-1][0] - 1.0


async def test_stream_forwarded_byte_for_byte(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    reply = text_reply(TEXT, events=5, input_tokens=40, output_tokens=9)
    gateway.fake.queue(reply)
    status, body = await stream_raw(gateway, key)
    assert status == 200
    request = gateway.fake.requests[-1]
    expected = b"".join(reply.stream(body.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode(), request.json["model"], 40))
    assert body == expected


async def test_error_event_mid_stream_passes_through_and_charges_what_was_used(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(text_reply(TEXT, events=4, input_tokens=100, output_tokens=20, error_event_after=4))
    status, body = await stream_raw(gateway, key)
    assert status == 200
    assert b"event: error" in body and b"overloaded_error" in body
    (event,) = await gateway.events()
    assert event["outcome"] == "upstream_error"
    assert event["input_tokens"] == 100  # from message_start


async def test_stalled_stream_ends_with_an_error_event(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(upstream={"idle_timeout_s": 0.5})
    key = await gateway.create_key("alice")
    gateway.fake.queue(text_reply(TEXT, events=4, input_tokens=70, stall_after=3))
    status, body = await stream_raw(gateway, key)
    assert status == 200
    assert body.rstrip().endswith(b"}")
    last = body.rstrip().split(b"\n\n")[-1]
    assert last.startswith(b"event: error\ndata: ")
    assert b"stalled" in last
    (event,) = await gateway.events()
    assert (event["outcome"], event["input_tokens"]) == ("upstream_error", 70)


async def test_cut_stream_ends_with_an_error_event(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(text_reply(TEXT, events=4, input_tokens=70, cut_after=3))
    status, body = await stream_raw(gateway, key)
    assert status == 200
    assert body.rstrip().split(b"\n\n")[-1].startswith(b"event: error\n")
    (event,) = await gateway.events()
    assert event["outcome"] == "upstream_error"


async def test_malformed_stream_is_answered_cleanly(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(text_reply(TEXT, malformed=True))
    status, body = await stream_raw(gateway, key)
    assert status == 200
    assert body.rstrip().split(b"\n\n")[-1].startswith(b"event: error\n")
    (event,) = await gateway.events()
    assert event["outcome"] == "upstream_error"
    # The server is unharmed.
    gateway.fake.queue(text_reply("fine"))
    assert (await stream_raw(gateway, key))[0] == 200


async def test_upstream_529_before_the_stream_keeps_status_and_body(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(error_reply(529, "overloaded_error", "Overloaded"))
    status, body = await stream_raw(gateway, key)
    assert status == 529
    assert orjson.loads(body)["error"]["type"] == "overloaded_error"
    (event,) = await gateway.events()
    assert (event["outcome"], event["micro_credits"]) == ("upstream_error", 0)


async def disconnect_midway(gateway: Gateway, key: str) -> None:
    """Read the first chunk of a slow stream, then hang up."""
    async with ClientSession() as http:
        resp = await http.post(gateway.url + "/v1/messages", json=sample_body(stream=True), headers={"x-api-key": key})
        await resp.content.readany()
        resp.close()


async def test_client_gone_finish_mode_charges_the_final_usage(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(text_reply(TEXT, events=6, delay_s=0.1, input_tokens=300, output_tokens=80))
    await disconnect_midway(gateway, key)
    (event,) = await gateway.wait_for_events(1)
    assert event["outcome"] == "client_disconnected"
    assert (event["input_tokens"], event["output_tokens"]) == (300, 80)  # read to the end upstream
    assert gateway.fake.disconnects == 0


async def test_client_gone_cancel_mode_charges_what_was_streamed(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(upstream={"on_client_disconnect": "cancel"})
    key = await gateway.create_key("alice")
    gateway.fake.queue(text_reply(TEXT * 4, events=20, delay_s=0.1, input_tokens=300, output_tokens=500))
    await disconnect_midway(gateway, key)
    await gateway.fake.wait_for_disconnects(1, timeout_s=5)
    (event,) = await gateway.wait_for_events(1)
    assert event["outcome"] == "client_disconnected"
    assert event["input_tokens"] == 300
    assert 1 <= event["output_tokens"] < 500  # an estimate of what was streamed, not the full answer


async def test_non_streaming_gzip_body_is_decoded_for_the_client(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(text_reply("zipped", gzip=True, input_tokens=5, output_tokens=2))
    async with ClientSession(auto_decompress=False) as http:
        async with http.post(gateway.url + "/v1/messages", json=sample_body(), headers={"x-api-key": key}) as resp:
            assert "content-encoding" not in resp.headers
            body = orjson.loads(await resp.read())
    assert body["content"][0]["text"] == "zipped"
    (event,) = await gateway.events()
    assert event["output_tokens"] == 2


async def test_upstream_tls_and_dns_failures_are_clear_5xx(make_gateway: GatewayFactory, fake_upstream) -> None:
    # TLS to a plain-HTTP server fails the handshake; a .invalid host never resolves.
    tls = await make_gateway(upstream={"base_url": fake_upstream.url.replace("http://", "https://")})
    dns = await make_gateway("dns.db", upstream={"base_url": "http://antex-test.invalid", "connect_timeout_s": 3})
    for gateway in (tls, dns):
        key = await gateway.create_key("alice")
        async with ClientSession() as http:
            async with http.post(gateway.url + "/v1/messages", json=sample_body(), headers={"x-api-key": key}) as resp:
                body = await resp.json()
                assert resp.status in (502, 504)
                assert body["type"] == "error" and body["error"]["type"] == "api_error"
        assert [(e["outcome"], e["micro_credits"]) for e in await gateway.events()] == [("upstream_error", 0)]


async def test_non_streaming_stall_and_cut_are_clear_5xx(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(upstream={"idle_timeout_s": 0.5})
    key = await gateway.create_key("alice")
    gateway.fake.queue(text_reply(TEXT, stall_after=1), text_reply(TEXT, cut_after=1))
    expected = [504, 502]
    for status in expected:
        async with ClientSession() as http:
            async with http.post(gateway.url + "/v1/messages", json=sample_body(), headers={"x-api-key": key}) as resp:
                assert resp.status == status
                assert (await resp.json())["error"]["type"] == "api_error"
    assert [e["outcome"] for e in await gateway.events()] == ["upstream_error", "upstream_error"]
    gateway.fake.queue(text_reply("healthy"))
    async with ClientSession() as http:
        async with http.post(gateway.url + "/v1/messages", json=sample_body(), headers={"x-api-key": key}) as resp:
            assert resp.status == 200


async def test_translated_stream_faults_end_in_the_openai_shape(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(upstream={"idle_timeout_s": 0.5})
    key = await gateway.create_key("alice")
    faults = [dict(stall_after=3), dict(cut_after=3), dict(malformed=True), dict(error_event_after=3)]
    for fault in faults:
        gateway.fake.queue(text_reply(TEXT, events=4, input_tokens=9, **fault))
        async with ClientSession() as http:
            async with http.post(gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                                 json={"model": "claude-sonnet-4-6", "stream": True,
                                       "messages": [{"role": "user", "content": "x"}]}) as resp:
                assert resp.status == 200
                body = await resp.read()
        last = orjson.loads(body.rstrip().split(b"\n\n")[-1].removeprefix(b"data: "))
        assert set(last) == {"error"} and last["error"]["message"], fault
    for fault in faults:
        gateway.fake.queue(text_reply(TEXT, events=4, **fault))
        async with ClientSession() as http:
            async with http.post(gateway.url + "/v1/responses", headers={"authorization": f"Bearer {key}"},
                                 json={"model": "claude-sonnet-4-6", "stream": True, "input": "x"}) as resp:
                body = await resp.read()
        assert b"event: response.failed" in body.split(b"\n\n")[-2], fault
    outcomes = [e["outcome"] for e in await gateway.events()]
    assert outcomes == ["upstream_error"] * 8
