"""Stored responses through the real openai SDK: tool loops continued with previous_response_id and
with item_reference, retrieval, deletion, input_items, keys kept apart, expiry, store: false."""
from __future__ import annotations

import asyncio
import sqlite3

import openai
import orjson
import pytest

from antex import app as app_module
from antex.appkeys import CLOCK, LEDGER, READER, RESPONSES
from antex.config import ResponsesConfig
from antex.responses_store import ResponseStore
from tests.conftest import Gateway, GatewayFactory
from tests.fake_replies import Reply, text_reply, tool_use_reply

MODEL = "claude-sonnet-4-6"
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
RETENTION_S = 3 * 86400  # config.example.toml's "3d"


@pytest.fixture(params=["inline", "in a worker"])
async def gateway(request: pytest.FixtureRequest, make_gateway: GatewayFactory) -> Gateway:
    """Each flow twice: bodies parsed inline, and every body parsed in a worker (antex/parse_pool.py),
    stored state recalled between the job's two runs."""
    return await make_gateway(server={"parse_in_worker_bytes": 1} if request.param == "in a worker" else {})


def client(gateway: Gateway, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


def stored_rows(gateway: Gateway) -> tuple[int, int]:
    """(responses, items) in the database."""
    db = sqlite3.connect(gateway.database)
    try:
        return (db.execute("SELECT COUNT(*) FROM responses").fetchone()[0],
                db.execute("SELECT COUNT(*) FROM response_items").fetchone()[0])
    finally:
        db.close()


def weather_call() -> Reply:
    return tool_use_reply(name="get_weather", input={"city": "Oslo"}, id="toolu_01oslo", input_tokens=50)


async def test_tool_loop_with_previous_response_id(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(weather_call(), text_reply("Sunny in Oslo.", events=3), text_reply("You are welcome."))
    async with client(gateway, key) as oa:
        first = await oa.responses.create(model=MODEL, input="Weather in Oslo?", tools=TOOLS)
        (call,) = [item for item in first.output if item.type == "function_call"]
        stream = await oa.responses.create(model=MODEL, tools=TOOLS, stream=True, previous_response_id=first.id,
                                           input=[{"type": "function_call_output", "call_id": call.call_id,
                                                   "output": "sunny, 21 C"}])
        events = [event async for event in stream]
        second = events[-1].response
        assert events[-1].type == "response.completed" and second.output_text == "Sunny in Oslo."
        assert second.previous_response_id == first.id
        # the moment the stream ended: the next turn finds it
        third = await oa.responses.create(model=MODEL, previous_response_id=second.id, input="Thanks!")
    assert third.output_text == "You are welcome."
    sent = [request.json for request in gateway.fake.requests]
    assert sent[1]["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01oslo", "name": "get_weather",
                                           "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01oslo", "content": "sunny, 21 C"}]},
    ]
    assert sent[2]["messages"][:3] == sent[1]["messages"]
    assert sent[2]["messages"][3:] == [
        {"role": "assistant", "content": [{"type": "text", "text": "Sunny in Oslo."}]},
        {"role": "user", "content": [{"type": "text", "text": "Thanks!"}]},
    ]
    assert "tools" not in sent[2]  # a continued response takes this request's settings, not the stored ones
    # the replayed conversation is input the upstream bills, and Antex meters it as such
    events = await gateway.events()
    assert events[2]["input_tokens"] > events[0]["input_tokens"] > 0


async def test_tool_loop_with_item_references(gateway: Gateway) -> None:
    """The Vercel AI SDK's way: its next turn refers to the earlier items by id."""
    key = await gateway.create_key("alice")
    gateway.fake.queue(weather_call(), text_reply("Sunny in Oslo."))
    async with client(gateway, key) as oa:
        stream = await oa.responses.create(model=MODEL, input="Weather in Oslo?", tools=TOOLS, stream=True)
        first = [event async for event in stream][-1].response
        (call,) = [item for item in first.output if item.type == "function_call"]
        first_input = await oa.responses.input_items.list(first.id)
        (question,) = first_input.data
        second = await oa.responses.create(model=MODEL, tools=TOOLS, input=[
            {"type": "item_reference", "id": question.id},
            {"type": "item_reference", "id": call.id},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ])
    assert second.output_text == "Sunny in Oslo."
    assert gateway.fake.requests[-1].json["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01oslo", "name": "get_weather",
                                           "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01oslo", "content": "sunny"}]},
    ]


async def test_retrieve_input_items_and_delete(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(text_reply("Answer."))
    turns = [{"role": "user", "content": f"line {n}"} for n in range(5)]
    async with client(gateway, key) as oa:
        made = await oa.responses.create(model=MODEL, input=turns, metadata={"topic": "test"})
        got = await oa.responses.retrieve(made.id)
        assert got.model_dump() == made.model_dump()
        page = await oa.responses.input_items.list(made.id, limit=2, order="asc")
        assert [item.content[0].text for item in page.data] == ["line 0", "line 1"] and page.has_more
        everything = [item async for item in oa.responses.input_items.list(made.id, limit=2, order="asc")]
        assert [item.content[0].text for item in everything] == [f"line {n}" for n in range(5)]
        newest_first = await oa.responses.input_items.list(made.id)
        assert [item.content[0].text for item in newest_first.data] == [f"line {n}" for n in range(4, -1, -1)]
        assert len({item.id for item in everything}) == 5
        assert await oa.responses.delete(made.id) is None
        with pytest.raises(openai.NotFoundError) as gone:
            await oa.responses.retrieve(made.id)
        with pytest.raises(openai.NotFoundError):
            await oa.responses.delete(made.id)
        with pytest.raises(openai.NotFoundError):
            await oa.responses.input_items.list(made.id)
        with pytest.raises(openai.BadRequestError) as bad:
            await oa.responses.input_items.list("resp_x", limit=101)
    assert gone.value.body["type"] == "not_found_error" and made.id in gone.value.body["message"]
    assert gone.value.body["message"].startswith(f"Response with id '{made.id}' not found")
    assert gone.value.body["param"] == "response_id"
    assert bad.value.body["param"] == "limit"
    await gateway.flush()
    assert stored_rows(gateway) == (0, 0)


async def test_another_key_never_sees_them(gateway: Gateway) -> None:
    alice = await gateway.create_key("alice")
    bob = await gateway.create_key("bob")
    gateway.fake.queue(weather_call())
    async with client(gateway, alice) as oa:
        made = await oa.responses.create(model=MODEL, input="Weather in Oslo?", tools=TOOLS)
        item_id = made.output[0].id
    async with client(gateway, bob) as oa:
        attempts = [
            oa.responses.retrieve(made.id),
            oa.responses.delete(made.id),
            oa.responses.input_items.list(made.id),
            oa.responses.create(model=MODEL, previous_response_id=made.id, input="and now?"),
            oa.responses.create(model=MODEL, input=[{"type": "item_reference", "id": item_id}]),
        ]
        for attempt in attempts:
            with pytest.raises(openai.NotFoundError) as refused:
                await attempt
            assert set(refused.value.body) == {"message", "type", "param", "code"}
            assert refused.value.body["type"] == "not_found_error"
    assert len(gateway.fake.requests) == 1
    async with client(gateway, alice) as oa:
        assert (await oa.responses.retrieve(made.id)).id == made.id


async def test_expiry_after_the_retention(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    async with client(gateway, key) as oa:
        old = await oa.responses.create(model=MODEL, input="first")
        gateway.clock.advance(RETENTION_S - 60)
        continued = await oa.responses.create(model=MODEL, input="second", previous_response_id=old.id)
        lone = await oa.responses.create(model=MODEL, input="alone")
        gateway.clock.advance(120)  # `old` was made more than the retention ago, but continued since
        third = await oa.responses.create(model=MODEL, input="third", previous_response_id=continued.id)
        assert len(gateway.fake.requests[-1].json["messages"]) == 5
        gateway.clock.advance(RETENTION_S + 1)
        for expired in (old.id, continued.id, third.id, lone.id):
            with pytest.raises(openai.NotFoundError):
                await oa.responses.retrieve(expired)
        with pytest.raises(openai.NotFoundError) as refused:
            await oa.responses.create(model=MODEL, input="fourth", previous_response_id=third.id)
    assert refused.value.body["param"] == "previous_response_id"
    await gateway.flush()
    assert stored_rows(gateway)[0] == 4
    gateway.app[RESPONSES].prune()
    await gateway.app[LEDGER].flush()
    assert stored_rows(gateway) == (0, 0)


async def test_store_false_keeps_nothing(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    async with client(gateway, key) as oa:
        plain = await oa.responses.create(model=MODEL, input="hi", store=False)
        stream = await oa.responses.create(model=MODEL, input="hi", store=False, stream=True)
        streamed = [event async for event in stream][-1].response
        for response_id in (plain.id, streamed.id):
            with pytest.raises(openai.NotFoundError):
                await oa.responses.retrieve(response_id)
        with pytest.raises(openai.NotFoundError):
            await oa.responses.create(model=MODEL, input="more", previous_response_id=plain.id)
    await gateway.flush()
    assert stored_rows(gateway) == (0, 0)


async def test_a_busy_keys_oldest_responses_go_first(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(responses={"max_per_key": 2})
    key = await gateway.create_key("alice")
    other = await gateway.create_key("bob")
    async with client(gateway, other) as oa:
        bobs = await oa.responses.create(model=MODEL, input="bob's")
    async with client(gateway, key) as oa:
        made = []
        for n in range(3):
            made.append(await oa.responses.create(model=MODEL, input=f"turn {n}"))
            gateway.clock.advance(1)
        await gateway.flush()
        with pytest.raises(openai.NotFoundError):
            await oa.responses.retrieve(made[0].id)
        assert [(await oa.responses.retrieve(r.id)).id for r in made[1:]] == [r.id for r in made[1:]]
    async with client(gateway, other) as oa:
        assert (await oa.responses.retrieve(bobs.id)).id == bobs.id  # another key's bound is its own

    small = await make_gateway("small.db", responses={"max_bytes_per_key": 1})
    key = await small.create_key("alice")
    async with client(small, key) as oa:
        first = await oa.responses.create(model=MODEL, input="one")
        second = await oa.responses.create(model=MODEL, input="two")
        await small.flush()
        with pytest.raises(openai.NotFoundError):
            await oa.responses.retrieve(first.id)
        assert (await oa.responses.retrieve(second.id)).id == second.id  # the newest is always kept


async def test_unknown_references_and_bad_store_flags_are_clear(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    async with client(gateway, key) as oa:
        with pytest.raises(openai.NotFoundError) as unknown:
            await oa.responses.create(model=MODEL, input=[{"type": "item_reference", "id": "msg_nope"}])
        with pytest.raises(openai.BadRequestError) as bad:
            await oa.responses.create(model=MODEL, input="hi", extra_body={"store": "yes"})
    assert "msg_nope" in unknown.value.body["message"] and unknown.value.body["param"] == "input"
    assert bad.value.body["param"] == "store"
    assert gateway.fake.requests == []


async def test_stored_body_is_what_was_answered(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    async with client(gateway, key) as oa:
        raw = await oa.responses.with_raw_response.create(model=MODEL, input="hi")
        answered = orjson.loads(raw.content)
        got = await oa.responses.with_raw_response.retrieve(answered["id"])
    assert orjson.loads(got.content) == answered


async def test_thinking_comes_back_with_the_stored_conversation(gateway: Gateway) -> None:
    """A tool loop with thinking on needs the thinking block back before the tool call: the stored
    reasoning item carries it."""
    key = await gateway.create_key("alice")
    thinking = {"type": "thinking", "thinking": "Look it up.", "signature": "EqStoredSig=="}
    call = weather_call()
    gateway.fake.queue(Reply(content=(thinking, *call.content), stop_reason="tool_use"), text_reply("Sunny."))
    async with client(gateway, key) as oa:
        stream = await oa.responses.create(model=MODEL, input="Weather in Oslo?", tools=TOOLS, stream=True,
                                           reasoning={"effort": "medium"})
        first = [event async for event in stream][-1].response
        (tool_call,) = [item for item in first.output if item.type == "function_call"]
        await oa.responses.create(model=MODEL, tools=TOOLS, reasoning={"effort": "medium"}, previous_response_id=first.id,
                                  input=[{"type": "function_call_output", "call_id": tool_call.call_id, "output": "sunny"}])
    replayed = gateway.fake.requests[-1].json["messages"][1]
    assert replayed["role"] == "assistant" and replayed["content"][0] == thinking
    assert gateway.fake.requests[-1].json["thinking"]["type"] == "enabled"


async def test_a_read_after_a_write_does_not_wait_for_a_busy_writer_to_pause(gateway: Gateway) -> None:
    """A response just kept is read back (previous_response_id) after the writer commits what was
    handed in before the read: never after the writer first runs out of work, which a busy gateway
    may never do."""
    key = await gateway.create_key("alice")
    ledger = gateway.app[LEDGER]
    stop = asyncio.Event()

    async def busy() -> None:  # writes arriving faster than commits end: the writer never idles
        while not stop.is_set():
            ledger.execute_soon([("UPDATE meta SET value = value WHERE name = 'keys_version'", ())])
            await asyncio.sleep(0)

    writes = asyncio.create_task(busy())
    try:
        async with client(gateway, key) as oa:
            first = await oa.responses.create(model=MODEL, input="first")
            async with asyncio.timeout(3):  # FLUSH_WAIT_S is 5: a wait for idleness would take that long
                second = await oa.responses.create(model=MODEL, input="second", previous_response_id=first.id)
        assert second.previous_response_id == first.id
        assert len(gateway.fake.requests[-1].json["messages"]) == 3
    finally:
        stop.set()
        await writes


async def test_a_continued_conversation_does_not_repeat_the_items_it_holds(gateway: Gateway) -> None:
    """Some clients continue with previous_response_id and still refer to the earlier items: each
    goes upstream once."""
    key = await gateway.create_key("alice")
    gateway.fake.queue(weather_call(), text_reply("Sunny."))
    async with client(gateway, key) as oa:
        first = await oa.responses.create(model=MODEL, input="Weather in Oslo?", tools=TOOLS)
        (call,) = first.output
        await oa.responses.create(model=MODEL, tools=TOOLS, previous_response_id=first.id, input=[
            {"type": "item_reference", "id": call.id},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    messages = gateway.fake.requests[-1].json["messages"]
    assert [message["role"] for message in messages] == ["user", "assistant", "user"]
    assert [block["type"] for block in messages[1]["content"]] == ["tool_use"]


async def test_expired_responses_are_pruned_by_the_server_itself(make_gateway: GatewayFactory,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "PRUNE_EVERY_S", 0.05)
    gateway = await make_gateway()
    key = await gateway.create_key("alice")
    async with client(gateway, key) as oa:
        await oa.responses.create(model=MODEL, input="hi")
    await gateway.flush()
    assert stored_rows(gateway) == (1, 2)
    gateway.clock.advance(RETENTION_S + 1)
    async with asyncio.timeout(5):
        while stored_rows(gateway) != (0, 0):
            await asyncio.sleep(0.05)


async def test_a_prune_brings_a_key_back_under_bounds_lowered_since(gateway: Gateway) -> None:
    """Each kept response drops at most a couple of the oldest; a prune takes whatever is left over
    (e.g. after the operator lowered the bounds)."""
    key = await gateway.create_key("alice")
    async with client(gateway, key) as oa:
        made = []
        for n in range(4):
            made.append(await oa.responses.create(model=MODEL, input=f"turn {n}"))
            gateway.clock.advance(1)
    app = gateway.app
    lowered = ResponsesConfig(RETENTION_S, max_per_key=1, max_bytes_per_key=10**9)
    ResponseStore(app[READER], app[LEDGER], lowered, app[CLOCK]).prune()
    await gateway.flush()
    db = sqlite3.connect(gateway.database)
    try:
        assert db.execute("SELECT id FROM responses").fetchall() == [(made[-1].id,)]
        assert db.execute("SELECT responses FROM response_totals").fetchall() == [(1,)]
    finally:
        db.close()


async def test_a_conversation_missing_an_earlier_response_is_not_continued(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    async with client(gateway, key) as oa:
        first = await oa.responses.create(model=MODEL, input="one")
        second = await oa.responses.create(model=MODEL, input="two", previous_response_id=first.id)
        await oa.responses.delete(first.id)
        assert (await oa.responses.retrieve(second.id)).id == second.id
        with pytest.raises(openai.NotFoundError) as refused:
            await oa.responses.create(model=MODEL, input="three", previous_response_id=second.id)
    assert refused.value.body["message"].startswith(f"Response with id '{second.id}', or one it continues, not found")
    assert len(gateway.fake.requests) == 2
