"""POST /v1/messages end to end: the real anthropic SDK through Antex to the fake upstream."""

from __future__ import annotations

import anthropic
import orjson
import pytest
from aiohttp import ClientSession
from multidict import CIMultiDict, CIMultiDictProxy

from antex.upstream import headers as upstream
from tests.conftest import Gateway, sample_body
from tests.fake_replies import text_reply, tool_use_reply


def sdk(gateway: Gateway, key: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gateway.url, api_key=key, max_retries=0)


async def test_sdk_text_message_is_metered(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(text_reply("Bonjour.", input_tokens=1000, output_tokens=200))
    async with sdk(gateway, key) as client:
        message = await client.messages.create(
            model="claude-sonnet-4-6", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
    assert message.content[0].text == "Bonjour."
    assert message.usage.input_tokens == 1000
    await gateway.flush()
    rows = await gateway.events()
    # sonnet: 1000 x 300 + 200 x 1500 micro-credits
    assert [
        (r["model"], r["input_tokens"], r["output_tokens"], r["micro_credits"], r["outcome"])
        for r in rows
    ] == [("claude-sonnet-4-6", 1000, 200, 600_000, "complete")]


async def test_client_key_is_swapped_and_body_forwarded_byte_for_byte(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    raw = b'{"model":"claude-sonnet-4-6","max_tokens":64,  "messages":[{"role":"user","content":"h\\u00e9"}]}'
    async with ClientSession() as http:
        async with http.post(
            f"{gateway.url}/v1/messages?beta=true",
            data=raw,
            headers={
                "x-api-key": key,
                "anthropic-version": "2023-06-01",
                "anthropic-beta": "tools-2024-04-04",
                "content-type": "application/json",
            },
        ) as resp:
            assert resp.status == 200
            assert "anthropic-organization-id" not in resp.headers
            assert resp.headers["anthropic-ratelimit-unified-status"] == "allowed"
            assert float(resp.headers["x-antex-overhead-ms"]) >= 0
    seen = gateway.fake.requests[-1]
    assert seen.body == raw
    assert seen.query_string == "beta=true"
    assert seen.headers["x-api-key"] != key
    assert key not in str(dict(seen.headers))
    assert seen.headers["anthropic-beta"] == "tools-2024-04-04"


def test_upstream_request_headers() -> None:
    client = CIMultiDictProxy(CIMultiDict([
        ("X-Api-Key", "sk_live_client"), ("Authorization", "Bearer x"), ("Accept-Encoding", "br"), ("Host", "antex"),
        ("Anthropic-Beta", "a"), ("Anthropic-Beta", "b"), ("X-Forwarded-For", "1.2.3.4"), ("User-Agent", "claude-cli")]))
    assert upstream.request_headers(client, "sk-ant-operator") == [
        ("Anthropic-Beta", "a"), ("Anthropic-Beta", "b"), ("User-Agent", "claude-cli"), ("x-api-key", "sk-ant-operator"),
        ("accept-encoding", "gzip, deflate"), ("anthropic-version", "2023-06-01"), ("content-type", "application/json")]
    sent = CIMultiDictProxy(CIMultiDict([("anthropic-version", "2024-01-01"), ("Content-Type", "application/json; charset=utf-8")]))
    assert upstream.request_headers(sent, "k")[:2] == [("anthropic-version", "2024-01-01"),
                                                         ("Content-Type", "application/json; charset=utf-8")]
    assert len(upstream.request_headers(sent, "k")) == 4  # the client's own version and type are kept, not doubled


async def test_sdk_streaming_text_and_usage(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(
        text_reply(
            "streamed words here", events=3, input_tokens=50, output_tokens=7, cache_read=100
        )
    )
    async with sdk(gateway, key) as client:
        async with client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
    assert text == "streamed words here"
    assert final.usage.output_tokens == 7
    await gateway.flush()
    (row,) = await gateway.events()
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"]) == (50, 7, 100)
    assert row["micro_credits"] == 50 * 300 + 7 * 1500 + 100 * 30


async def test_sdk_tool_use_streaming_beta(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(tool_use_reply(name="get_weather", input={"city": "Paris"}))
    async with sdk(gateway, key) as client:
        async with client.beta.messages.stream(
            model="claude-sonnet-4-6",
            max_tokens=64,
            messages=[{"role": "user", "content": "weather?"}],
            tools=[{"name": "get_weather", "description": "w", "input_schema": {"type": "object"}}],
        ) as stream:
            final = await stream.get_final_message()
    tool = [b for b in final.content if b.type == "tool_use"][0]
    assert tool.input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"
    assert gateway.fake.requests[-1].path == "/v1/messages"


async def test_alias_is_rewritten_dated_id_is_not(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    async with sdk(gateway, key) as client:
        await client.messages.create(
            model="sonnet", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
        await client.messages.create(
            model="claude-haiku-4-5-20251001",
            max_tokens=8,
            messages=[{"role": "user", "content": "x"}],
        )
        await client.messages.create(
            model="claude-opus-4-6[1m]", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    sent = [r.json["model"] for r in gateway.fake.requests]
    assert sent == ["claude-sonnet-4-6", "claude-haiku-4-5-20251001", "claude-opus-4-6"]
    await gateway.flush()
    assert [r["model"] for r in await gateway.events()] == [
        "claude-sonnet-4-6",
        "claude-haiku-4-5",
        "claude-opus-4-6",
    ]


async def test_upstream_error_status_and_body_pass_through(gateway: Gateway) -> None:
    from tests.fake_replies import error_reply

    key = await gateway.create_key("alice")
    gateway.fake.queue(error_reply(529, "overloaded_error", "Overloaded"))
    async with sdk(gateway, key) as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await client.messages.create(**sample_body())
    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"



def test_orjson_available() -> None:
    assert orjson.loads(b"{}") == {}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_server_tool_uses_are_charged(gateway: Gateway, stream: bool) -> None:
    """Anthropic bills web search per search: 1 credit each by default (web fetch: tokens only);
    the stream reports the counts in message_delta, after a message_start of zeros."""
    key = await gateway.create_key("alice")
    gateway.fake.queue(text_reply("Found it.", input_tokens=100, output_tokens=10, web_search_requests=3,
                                  web_fetch_requests=2))
    async with sdk(gateway, key) as client:
        request = dict(model="claude-sonnet-4-6", max_tokens=64, messages=[{"role": "user", "content": "search"}])
        if stream:
            async with client.messages.stream(**request) as events:
                message = await events.get_final_message()
        else:
            message = await client.messages.create(**request)
    assert message.usage.server_tool_use.web_search_requests == 3
    (row,) = await gateway.events()
    assert (row["web_search_requests"], row["web_fetch_requests"]) == (3, 2)
    assert row["micro_credits"] == 100 * 300 + 10 * 1500 + 3 * 1_000_000
