"""The OpenAI front doors with the real openai SDK: chat completions and responses, metered alike."""
from __future__ import annotations

import openai
import orjson
import pytest
from aiohttp import ClientSession

from tests.conftest import Gateway
from tests.fake_replies import error_reply, text_reply, tool_use_reply

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
         "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


def client(gateway: Gateway, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)



async def test_chat_plain(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(text_reply("Hi there.", input_tokens=40, output_tokens=5, cache_read=10))
    async with client(gateway, key) as oa:
        done = await oa.chat.completions.create(model="claude-sonnet-4-6", messages=[
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}])
    assert done.choices[0].message.content == "Hi there."
    assert done.choices[0].finish_reason == "stop"
    assert done.usage.prompt_tokens == 50 and done.usage.completion_tokens == 5
    assert done.usage.prompt_tokens_details.cached_tokens == 10
    sent = gateway.fake.requests[-1].json
    assert sent["system"] in ("Be brief.", [{"type": "text", "text": "Be brief."}])
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello"}]}] or \
        sent["messages"] == [{"role": "user", "content": "hello"}]
    (event,) = await gateway.events()
    assert (event["endpoint"], event["input_tokens"], event["output_tokens"], event["cache_read_tokens"]) == (
        "/v1/chat/completions", 40, 5, 10)


async def test_chat_stream_with_usage(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(text_reply("streaming works", events=3, input_tokens=20, output_tokens=4))
    async with client(gateway, key) as oa:
        stream = await oa.chat.completions.create(model="claude-sonnet-4-6", stream=True,
                                                  stream_options={"include_usage": True},
                                                  messages=[{"role": "user", "content": "go"}])
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streaming works"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


async def test_chat_tools_round_trip(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(tool_use_reply(name="get_weather", input={"city": "Paris"}, id="toolu_01abc"),
                       text_reply("It is sunny in Paris."))
    async with client(gateway, key) as oa:
        first = await oa.chat.completions.create(model="claude-sonnet-4-6", tools=TOOLS,
                                                 messages=[{"role": "user", "content": "Weather in Paris?"}])
        call = first.choices[0].message.tool_calls[0]
        assert first.choices[0].finish_reason == "tool_calls"
        assert (call.function.name, orjson.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
        second = await oa.chat.completions.create(model="claude-sonnet-4-6", tools=TOOLS, messages=[
            {"role": "user", "content": "Weather in Paris?"},
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert second.choices[0].message.content == "It is sunny in Paris."
    history = gateway.fake.requests[-1].json["messages"]
    assert history[1]["content"][-1]["type"] == "tool_use" and history[1]["content"][-1]["id"] == call.id
    assert history[2]["content"][0] == {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"} or \
        history[2]["content"][0]["tool_use_id"] == call.id


async def test_chat_stream_tool_call_fragments(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(tool_use_reply(name="get_weather", input={"city": "Paris"}))
    async with client(gateway, key) as oa:
        stream = await oa.chat.completions.create(model="claude-sonnet-4-6", tools=TOOLS, stream=True,
                                                  messages=[{"role": "user", "content": "Weather?"}])
        deltas = [c.choices[0].delta for c in [chunk async for chunk in stream] if c.choices]
    calls = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert calls[0].function.name == "get_weather" and calls[0].id
    assert orjson.loads("".join(tc.function.arguments or "" for tc in calls)) == {"city": "Paris"}


async def test_chat_image_input(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    async with client(gateway, key) as oa:
        await oa.chat.completions.create(model="claude-sonnet-4-6", messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": PIXEL}}]}])
    blocks = gateway.fake.requests[-1].json["messages"][0]["content"]
    image = [b for b in blocks if b["type"] == "image"][0]
    assert image["source"]["type"] == "base64" and image["source"]["media_type"] == "image/png"


async def test_chat_upstream_error_mid_stream_raises_in_the_sdk(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(text_reply("partial answer", events=3, error_event_after=3))
    async with client(gateway, key) as oa:
        stream = await oa.chat.completions.create(model="claude-sonnet-4-6", stream=True,
                                                  messages=[{"role": "user", "content": "go"}])
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass
    (event,) = await gateway.events()
    assert event["outcome"] == "upstream_error"


async def test_openai_errors_have_the_openai_shape_and_same_status(gateway: Gateway) -> None:
    key = await gateway.create_key("bob", plan="starter")
    async with client(gateway, key) as oa:
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await oa.chat.completions.create(model="claude-opus-4-6", messages=[{"role": "user", "content": "x"}])
        assert denied.value.body["type"] == "permission_error"
        with pytest.raises(openai.BadRequestError) as bad:
            await oa.chat.completions.create(model="claude-sonnet-4-6", n=2, messages=[{"role": "user", "content": "x"}])
        assert bad.value.body["param"] == "n"
        gateway.fake.queue(error_reply(529, "overloaded_error", "Overloaded"))
        with pytest.raises(openai.APIStatusError) as overloaded:
            await oa.chat.completions.create(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "x"}])
        assert overloaded.value.status_code == 529 and overloaded.value.body["type"] == "overloaded_error"
    async with ClientSession() as http:
        async with http.post(gateway.url + "/v1/chat/completions", data=b"nope",
                             headers={"authorization": f"Bearer {key}"}) as resp:
            body = await resp.json()
            assert resp.status == 400 and set(body["error"]) == {"message", "type", "param", "code"}
        async with http.post(gateway.url + "/v1/responses", json={"model": "claude-sonnet-4-6", "input": "x"}) as resp:
            assert resp.status == 401 and (await resp.json())["error"]["type"] == "authentication_error"


async def test_responses_plain_and_streamed(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(text_reply("Plain answer.", input_tokens=30, output_tokens=3),
                       text_reply("Streamed answer.", events=3, input_tokens=31, output_tokens=4))
    async with client(gateway, key) as oa:
        plain = await oa.responses.create(model="claude-sonnet-4-6", instructions="Be brief.", input="hello")
        assert plain.output_text == "Plain answer."
        assert plain.usage.input_tokens == 30 and plain.usage.output_tokens == 3
        stream = await oa.responses.create(model="claude-sonnet-4-6", input="hello", stream=True, store=False)
        events = [event async for event in stream]
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Streamed answer."
    completed = events[-1].response
    assert isinstance(completed.id, str) and completed.usage.total_tokens == 35
    assert [e["endpoint"] for e in await gateway.events()] == ["/v1/responses", "/v1/responses"]


async def test_responses_function_tools(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(tool_use_reply(name="get_weather", input={"city": "Oslo"}))
    tools = [{"type": "function", "name": "get_weather", "description": "Weather",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    async with client(gateway, key) as oa:
        stream = await oa.responses.create(model="claude-sonnet-4-6", input="Weather in Oslo?", tools=tools, stream=True)
        events = [event async for event in stream]
    done = [e.item for e in events if e.type == "response.output_item.done" and e.item.type == "function_call"]
    assert done and done[0].name == "get_weather" and orjson.loads(done[0].arguments) == {"city": "Oslo"}
    sent_tools = gateway.fake.requests[-1].json["tools"]
    assert sent_tools[0]["name"] == "get_weather" and "input_schema" in sent_tools[0]


async def test_translated_requests_count_like_messages(gateway: Gateway) -> None:
    """The same token counts cost the same credits whichever door they came through."""
    key = await gateway.create_key("alice")
    for _ in range(3):
        gateway.fake.queue(text_reply("same", input_tokens=1000, output_tokens=100))
    async with ClientSession() as http:
        async with http.post(gateway.url + "/v1/messages", headers={"x-api-key": key},
                             json={"model": "claude-sonnet-4-6", "max_tokens": 100,
                                   "messages": [{"role": "user", "content": "x"}]}) as resp:
            assert resp.status == 200
    async with client(gateway, key) as oa:
        await oa.chat.completions.create(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "x"}])
        await oa.responses.create(model="claude-sonnet-4-6", input="x")
    credits = {e["endpoint"]: e["micro_credits"] for e in await gateway.events()}
    assert len(set(credits.values())) == 1 and len(credits) == 3


async def test_responses_carry_codex_usage_headers(gateway: Gateway) -> None:
    key = await gateway.create_key("alice", credits_5h=10.0, credits_7d=100.0)
    gateway.fake.queue(text_reply("ok", input_tokens=10000, output_tokens=1000))  # 4.5 credits
    async with client(gateway, key) as oa:
        await oa.responses.create(model="claude-sonnet-4-6", input="x")
        raw = await oa.responses.with_raw_response.create(model="claude-sonnet-4-6", input="x")
    headers = raw.headers
    assert headers["x-codex-primary-used-percent"] == "45"
    assert headers["x-codex-primary-window-minutes"] == "300"
    assert headers["x-codex-secondary-used-percent"] == "4.5"
    assert headers["x-codex-secondary-window-minutes"] == "10080"
    assert int(headers["x-codex-primary-reset-at"]) == int(gateway.clock()) + 5 * 3600


@pytest.mark.parametrize("door", ["chat", "responses"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_server_tool_uses_are_charged_through_the_openai_doors(gateway: Gateway, door: str, stream: bool) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(text_reply("Found it.", input_tokens=20, output_tokens=4, web_search_requests=2))
    async with client(gateway, key) as oa:
        if door == "chat":
            answer = await oa.chat.completions.create(model="claude-sonnet-4-6", stream=stream,
                                                      messages=[{"role": "user", "content": "search"}])
        else:
            answer = await oa.responses.create(model="claude-sonnet-4-6", stream=stream, input="search")
        if stream:
            [chunk async for chunk in answer]
    (event,) = await gateway.wait_for_events(1)
    assert (event["web_search_requests"], event["web_fetch_requests"]) == (2, 0)
    assert event["micro_credits"] == 20 * 300 + 4 * 1500 + 2 * 1_000_000
