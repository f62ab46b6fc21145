"""The fake upstream speaks Anthropic's wire format, checked with the real SDK and raw bytes."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import anthropic
import httpx2
import orjson
import pytest

from tests.fake_anthropic import (
    DEFAULT_API_KEY,
    DEFAULT_OUTPUT_TOKENS,
    DEFAULT_TEXT,
    ORGANIZATION_ID,
    FakeAnthropic,
    error_reply,
    estimate_input_tokens,
    text_reply,
    thinking_reply,
    tool_use_reply,
)
from tests.fake_replies import Reply

REPO = Path(__file__).resolve().parent.parent
MODEL = "claude-sonnet-4-6"  # 4-5 makes the SDK warn (deprecated), an error here
MESSAGE = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "Hi there"}]}
HEADERS = {"x-api-key": DEFAULT_API_KEY, "anthropic-version": "2023-06-01"}


@pytest.fixture
def fake() -> FakeAnthropic:
    return FakeAnthropic()


@pytest.fixture
async def base_url(fake, aiohttp_server) -> str:
    server = await aiohttp_server(fake.app())
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def sdk(base_url):
    async with anthropic.AsyncAnthropic(
        base_url=base_url, api_key=DEFAULT_API_KEY, max_retries=0, timeout=5
    ) as client:
        yield client


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


def parse_sse(raw: bytes) -> list[tuple[str, dict]]:
    """(event name, data) pairs, insisting on Anthropic's exact framing."""
    frames = raw.decode().split("\n\n")
    assert frames[-1] == "", "a stream ends with a blank line"
    pairs = []
    for frame in frames[:-1]:
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        name, data = (
            event_line.removeprefix("event: "),
            json.loads(data_line.removeprefix("data: ")),
        )
        assert data["type"] == name
        pairs.append((name, data))
    return pairs


async def post_raw(http, base_url, body: dict, **headers) -> tuple[aiohttp.ClientResponse, bytes]:
    async with http.post(
        f"{base_url}/v1/messages", json=body, headers={**HEADERS, **headers}
    ) as resp:
        return resp, await resp.read()


async def test_non_streaming_message_has_anthropic_shape_and_usage(fake, sdk):
    fake.queue(
        text_reply(
            "Bonjour",
            input_tokens=100,
            output_tokens=7,
            cache_write_5m=30,
            cache_write_1h=40,
            cache_read=50,
            stop_reason="max_tokens",
            model="claude-opus-4-6",
        )
    )
    raw = await sdk.messages.with_raw_response.create(**MESSAGE)
    message = await raw.parse()

    assert (
        message.id.startswith("msg_01")
        and message.type == "message"
        and message.role == "assistant"
    )
    assert message.model == "claude-opus-4-6"
    assert [(block.type, block.text) for block in message.content] == [("text", "Bonjour")]
    assert (message.stop_reason, message.stop_sequence) == ("max_tokens", None)
    usage = message.usage
    assert (usage.input_tokens, usage.output_tokens) == (100, 7)
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (70, 50)
    assert (
        usage.cache_creation.ephemeral_5m_input_tokens,
        usage.cache_creation.ephemeral_1h_input_tokens,
    ) == (30, 40)
    assert raw.headers["request-id"].startswith("req_")
    assert raw.headers["anthropic-organization-id"] == ORGANIZATION_ID
    assert raw.headers["content-type"] == "application/json"


async def test_default_reply_is_deterministic_and_requests_are_recorded(fake, sdk):
    message = await sdk.messages.create(**MESSAGE)

    [request] = await fake.wait_for_requests(1)
    assert message.content[0].text == DEFAULT_TEXT
    assert message.model == MODEL
    assert (
        message.usage.input_tokens
        == estimate_input_tokens(request.body)
        == max(1, len(request.body) // 4)
    )
    assert message.usage.output_tokens == DEFAULT_OUTPUT_TOKENS
    assert (request.method, request.path, request.query_string) == ("POST", "/v1/messages", "")
    assert request.json == MESSAGE and orjson.loads(request.body) == MESSAGE
    assert "anthropic-version" in request.headers
    assert request.headers.get("Authorization") == f"Bearer {DEFAULT_API_KEY}"


async def test_raw_body_is_recorded_byte_for_byte(fake, http, base_url):
    body = b'{"model":"m",  "max_tokens":5,"messages":[{"role":"user","content":"\\u00e9"}]}'
    async with http.post(f"{base_url}/v1/messages?beta=true", data=body, headers=HEADERS) as resp:
        assert resp.status == 200
    assert fake.requests[0].body == body
    assert fake.requests[0].query_string == "beta=true"
    assert fake.requests[0].headers["x-api-key"] == DEFAULT_API_KEY


async def test_stream_sse_framing_and_event_order(fake, http, base_url):
    fake.queue(
        text_reply(
            "abcdef", events=3, input_tokens=11, output_tokens=4, cache_write_1h=2, cache_read=9
        )
    )
    resp, raw = await post_raw(http, base_url, {**MESSAGE, "stream": True})

    assert resp.status == 200
    assert resp.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert resp.headers["anthropic-organization-id"] == ORGANIZATION_ID
    assert raw.startswith(b"event: message_start\ndata: {")
    events = parse_sse(raw)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start_usage = events[0][1]["message"]["usage"]
    assert start_usage["input_tokens"] == 11 and start_usage["output_tokens"] == 1
    assert start_usage["cache_creation"] == {
        "ephemeral_5m_input_tokens": 0,
        "ephemeral_1h_input_tokens": 2,
    }
    assert [data["delta"]["text"] for name, data in events if name == "content_block_delta"] == [
        "ab",
        "cd",
        "ef",
    ]
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {
            "input_tokens": 11,
            "cache_creation_input_tokens": 2,
            "cache_read_input_tokens": 9,
            "output_tokens": 4,
        },
    }


async def test_sdk_stream_accumulates_text_and_usage(fake, sdk):
    fake.queue(
        text_reply(
            "Streaming works fine.", events=5, input_tokens=21, output_tokens=6, cache_write_5m=3
        )
    )
    async with sdk.messages.stream(**MESSAGE) as stream:
        pieces = [text async for text in stream.text_stream]
        message = await stream.get_final_message()

    assert len(pieces) == 5 and "".join(pieces) == "Streaming works fine."
    assert (message.usage.input_tokens, message.usage.output_tokens) == (21, 6)
    assert message.usage.cache_creation_input_tokens == 3


async def test_tool_use_streams_partial_json_and_parses(fake, sdk, http, base_url):
    tool_input = {"city": "Paris", "days": [1, 2, 3], "units": "celsius"}
    reply = tool_use_reply("get_weather", tool_input, text="Checking.", id="toolu_01abc")
    fake.queue(reply, reply, reply)

    message = await sdk.messages.create(**MESSAGE)
    assert message.stop_reason == "tool_use"
    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert (message.content[1].id, message.content[1].name, message.content[1].input) == (
        "toolu_01abc",
        "get_weather",
        tool_input,
    )

    async with sdk.messages.stream(**MESSAGE) as stream:
        streamed = await stream.get_final_message()
    assert streamed.content[1].input == tool_input

    _, raw = await post_raw(http, base_url, {**MESSAGE, "stream": True})
    events = parse_sse(raw)
    starts = [data["content_block"] for name, data in events if name == "content_block_start"]
    assert starts == [
        {"type": "text", "text": ""},
        {"type": "tool_use", "id": "toolu_01abc", "name": "get_weather", "input": {}},
    ]
    partials = [
        data["delta"]["partial_json"]
        for name, data in events
        if name == "content_block_delta" and data["index"] == 1
    ]
    assert len(partials) >= 3 and partials[0] == ""
    assert json.loads("".join(partials)) == tool_input


async def test_thinking_block_streams_thinking_and_signature(fake, sdk, http, base_url):
    fake.queue(
        thinking_reply("Let me think step by step.", "42", signature="sig-xyz"),
        thinking_reply("Hmm.", "42"),
    )
    async with sdk.messages.stream(**MESSAGE) as stream:
        message = await stream.get_final_message()
    thinking, text = message.content
    assert (thinking.type, thinking.thinking, thinking.signature) == (
        "thinking",
        "Let me think step by step.",
        "sig-xyz",
    )
    assert (text.type, text.text) == ("text", "42")

    _, raw = await post_raw(http, base_url, {**MESSAGE, "stream": True})
    delta_types = [
        data["delta"]["type"] for name, data in parse_sse(raw) if name == "content_block_delta"
    ]
    assert delta_types == [
        "thinking_delta",
        "thinking_delta",
        "thinking_delta",
        "signature_delta",
        "text_delta",
    ]


@pytest.mark.parametrize(
    ("status", "error_type", "exception"),
    [
        (529, "overloaded_error", anthropic.OverloadedError),
        (500, "api_error", anthropic.InternalServerError),
        (429, "rate_limit_error", anthropic.RateLimitError),
        (400, "invalid_request_error", anthropic.BadRequestError),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_http_errors_map_to_sdk_exceptions(fake, sdk, status, error_type, exception, stream):
    fake.queue(error_reply(status, error_type, "scripted failure", headers={"retry-after": "3"}))
    with pytest.raises(exception) as caught:
        await sdk.messages.create(**MESSAGE, stream=stream)

    assert caught.value.status_code == status
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"] == {"type": error_type, "message": "scripted failure"}
    assert caught.value.body["request_id"] == caught.value.response.headers["request-id"]
    assert caught.value.response.headers["retry-after"] == "3"
    assert len(fake.requests) == 1


async def test_wrong_key_is_an_authentication_error(base_url):
    async with anthropic.AsyncAnthropic(
        base_url=base_url, api_key="sk_live_client", max_retries=0
    ) as client:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await client.messages.create(**MESSAGE)
    assert caught.value.body["error"] == {
        "type": "authentication_error",
        "message": "invalid x-api-key",
    }


async def test_a_client_key_next_to_the_upstream_key_is_refused(http, base_url):
    leaky = {**HEADERS, "Authorization": "Bearer sk_live_client"}
    async with http.post(f"{base_url}/v1/messages", json=MESSAGE, headers=leaky) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["type"] == "authentication_error"


async def test_request_checks_like_anthropic(http, base_url):
    async with http.post(
        f"{base_url}/v1/messages", json=MESSAGE, headers={"x-api-key": DEFAULT_API_KEY}
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["message"] == "anthropic-version: header is required"
    resp, raw = await post_raw(http, base_url, {"model": MODEL, "messages": []})
    assert resp.status == 400
    assert orjson.loads(raw)["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }
    async with http.get(f"{base_url}/v1/nowhere", headers=HEADERS) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["type"] == "not_found_error"


async def test_count_tokens_and_root(fake, sdk, http, base_url):
    counted = await sdk.messages.count_tokens(model=MODEL, messages=MESSAGE["messages"])
    assert counted.input_tokens == estimate_input_tokens(fake.requests[0].body)
    for method in ("HEAD", "GET"):
        async with http.request(method, f"{base_url}/") as resp:
            assert resp.status == 200


async def test_queue_is_fifo_then_default(fake, sdk):
    fake.queue(text_reply("first"), text_reply("second"))
    texts = [(await sdk.messages.create(**MESSAGE)).content[0].text for _ in range(3)]
    assert texts == ["first", "second", DEFAULT_TEXT]


async def test_error_event_mid_stream_raises_api_status_error(fake, sdk, http, base_url):
    fake.queue(
        text_reply("abc", events=3, error_event_after=4),
        text_reply("abc", events=3, error_event_after=4),
    )
    seen = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with sdk.messages.stream(**MESSAGE) as stream:
            async for event in stream:
                seen.append(event.type)
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert "content_block_delta" in seen

    _, raw = await post_raw(http, base_url, {**MESSAGE, "stream": True})
    assert [name for name, _ in parse_sse(raw)] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "error",
    ]


async def test_cut_stream_ends_without_message_stop(fake, sdk, http, base_url):
    fake.queue(text_reply(cut_after=3), text_reply(cut_after=3))
    with pytest.raises(httpx2.RemoteProtocolError):
        async with sdk.messages.stream(**MESSAGE) as stream:
            await stream.get_final_message()

    async with http.post(
        f"{base_url}/v1/messages", json={**MESSAGE, "stream": True}, headers=HEADERS
    ) as resp:
        received = b""
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in resp.content.iter_any():
                received += chunk
    assert received.count(b"event: ") == 3 and b"message_stop" not in received


async def test_stall_keeps_connection_until_client_leaves(fake, http, base_url):
    fake.queue(text_reply(stall_after=2))
    async with http.post(
        f"{base_url}/v1/messages", json={**MESSAGE, "stream": True}, headers=HEADERS
    ) as resp:
        first = await resp.content.readuntil(b"\n\n")
        assert first.startswith(b"event: message_start\n")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(resp.content.read(), timeout=0.3)
        assert fake.disconnects == 0
    await fake.wait_for_disconnects(1)
    assert fake.disconnects == 1


async def test_client_leaving_a_slow_stream_is_counted(fake, http, base_url):
    fake.queue(text_reply("abcdefghij", events=10, delay_s=0.05))
    async with http.post(
        f"{base_url}/v1/messages", json={**MESSAGE, "stream": True}, headers=HEADERS
    ) as resp:
        await resp.content.readuntil(b"\n\n")
    await fake.wait_for_disconnects(1)


async def test_delay_slows_each_event(fake, sdk):
    fake.queue(text_reply("abcd", events=4, delay_s=0.03))
    started = time.monotonic()
    async with sdk.messages.stream(**MESSAGE) as stream:
        await stream.get_final_message()
    # 10 events: message_start, block start, ping, 4 deltas, block stop, message_delta, stop
    assert time.monotonic() - started >= 0.03 * 10


async def test_malformed_stream_and_body_fail_to_parse(fake, sdk):
    fake.queue(text_reply(malformed=True), text_reply(malformed=True))
    with pytest.raises(json.JSONDecodeError):
        async with sdk.messages.stream(**MESSAGE) as stream:
            await stream.get_final_message()
    with pytest.raises(json.JSONDecodeError):
        await sdk.messages.create(**MESSAGE)


async def test_gzip_body_is_encoded_on_the_wire(fake, sdk, http, base_url):
    fake.queue(text_reply("zipped", gzip=True), text_reply("zipped", gzip=True))
    resp, raw = await post_raw(http, base_url, MESSAGE)
    assert resp.headers["content-encoding"] == "gzip"
    assert raw[:2] == b"\x1f\x8b"
    assert orjson.loads(gzip.decompress(raw))["content"] == [{"type": "text", "text": "zipped"}]
    assert (await sdk.messages.create(**MESSAGE)).content[0].text == "zipped"


def test_reply_rejects_impossible_scripts():
    with pytest.raises(ValueError):
        Reply(stall_after=1, cut_after=2)
    with pytest.raises(ValueError):
        text_reply("ab", events=3)


async def test_standalone_process_serves_forty_events():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fake_anthropic",
            "--port",
            "0",
            "--events",
            "40",
            "--api-key",
            "k-test",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = await asyncio.to_thread(process.stdout.readline)
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        async with (
            anthropic.AsyncAnthropic(base_url=url, api_key="k-test", max_retries=0) as client,
            client.messages.stream(**MESSAGE) as stream,
        ):
            pieces = [text async for text in stream.text_stream]
        assert len(pieces) == 40
        assert "".join(pieces).startswith(DEFAULT_TEXT)
    finally:
        process.terminate()
        assert await asyncio.to_thread(process.wait, 5) == 0
        process.stdout.close()


async def test_coalesced_stream_has_the_same_frames(aiohttp_server, http):
    fake = FakeAnthropic(coalesce=True)
    fake.queue(text_reply("abcd", events=2))
    server = await aiohttp_server(fake.app())
    _, raw = await post_raw(http, str(server.make_url("")).rstrip("/"), {**MESSAGE, "stream": True})
    assert [name for name, _ in parse_sse(raw)] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


async def test_wait_for_requests_times_out_with_a_clear_error(fake):
    with pytest.raises(TimeoutError, match=r"no 1 requests within 0\.05 s"):
        await fake.wait_for_requests(1, timeout_s=0.05)
