"""The doors' jobs (antex/prepare.py) answer the same inline and in a parse worker (antex/parse_pool.py):
the same Prepared for every valid body, the same error (type, message, param, status) for every
invalid one; and the pool survives a dead worker and keeps its deadline."""
from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, replace
from typing import Any, Callable

import orjson
import pytest

from antex import prepare
from antex.config import default_document, from_document
from antex.errors import AntexError
from antex.parse_pool import ParsePool
from tests.conftest import sample_body

CONFIG = from_document(default_document())
MAX = prepare.Terms(CONFIG.names, CONFIG.plans["max"], "max")
STARTER = prepare.Terms(CONFIG.names, CONFIG.plans["starter"], "starter", name_conversation=True)
REFUSING = prepare.Terms(CONFIG.names, replace(CONFIG.plans["starter"], max_tokens_over="refuse"), "starter")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def messages_body(**fields: Any) -> bytes:
    return dumps(sample_body(**fields))


def chat_body(**fields: Any) -> bytes:
    return dumps({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}], **fields})


def responses_body(**fields: Any) -> bytes:
    return dumps({"model": "claude-sonnet-4-6", "input": "hi", **fields})


def splice(body: bytes, extra: bytes) -> bytes:
    """`body` (a JSON object) with `extra` pairs written in before its closing brace."""
    return body[:-1] + b"," + extra + b"}"


# Invalid whatever the door: not JSON, not an object, empty.
MALFORMED = [b"", b"{", b'{"model": "claude-sonnet-4-6",}', b"[1, 2]", b'"text"', b"null", b"\xff\xfe", b"{} {}"]

MESSAGES_CASES = [
    messages_body(),
    messages_body(model="sonnet"),  # an alias: re-encoded with the model's ID
    messages_body(model="claude-sonnet-4-6-20250929"),  # a dated ID passes as it is
    messages_body(model="sonnet[1m]"),
    messages_body(stream=True),
    messages_body(max_tokens=100000, thinking={"type": "enabled", "budget_tokens": 90000}),  # lowered on starter
    messages_body(max_tokens=200000),  # over the model's own limit
    messages_body(model="claude-opus-4-6"),  # not on starter
    messages_body(model="claude-nope"),
    messages_body(model=5),
    messages_body(model=None),
    messages_body(messages="hi"),
    messages_body(max_tokens="5"),
    messages_body(max_tokens=True),
    messages_body(max_tokens=0),
    messages_body(stream="true"),
    messages_body(metadata={"user_id": "user_x_account_y_session_z"}),
    splice(messages_body(), b'"model":"claude-haiku-4-5"'),
    splice(messages_body(), b'"mod\\u0065l":"claude-haiku-4-5"'),
    splice(messages_body(), b'"max_tokens":99999999'),
    splice(messages_body(), b'"max_tok\\u0065ns":1'),
    splice(messages_body(stream=True), b'"stream":false'),
    splice(messages_body(stream=True), b'"str\\u0065am":false'),
    splice(messages_body(), b'"messages":[]'),
    splice(messages_body(), b'"system":"a","system":"b"'),  # not a field Antex reads: forwarded as sent
    dumps(sample_body()).replace(b'"hi"', b'"h\\u0069"'),
    *MALFORMED,
]

COUNT_CASES = [
    dumps({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}),
    dumps({"model": "haiku", "messages": []}),
    dumps({"messages": []}),
    dumps({"model": ["x"]}),
    b'{"model":"haiku","model":"opus"}',
    b'{"model":"haiku","m\\u006fdel":"opus"}',
    *MALFORMED,
]

CHAT_CASES = [
    chat_body(),
    chat_body(model="sonnet", max_completion_tokens=100000, reasoning_effort="high"),
    chat_body(stream=True, stream_options={"include_usage": True}),
    chat_body(messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "done"}],
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}], tool_choice="required"),
    chat_body(response_format={"type": "json_object"}, temperature=1.5, stop=["x"], user="u"),
    chat_body(max_tokens=200000),
    chat_body(model="claude-opus-4-6"),
    chat_body(model="gpt-4o"),
    chat_body(n=2),
    chat_body(messages=[]),
    chat_body(messages="hi"),
    chat_body(messages=[{"role": "wizard", "content": "hi"}]),
    chat_body(messages=[{"role": "user", "content": [{"type": "audio", "audio": {}}]}]),
    chat_body(reasoning_effort="extreme"),
    chat_body(max_completion_tokens="5"),
    chat_body(stream="yes"),
    chat_body(stream_options=[]),
    chat_body(tools=[{"type": "function", "function": {"name": ""}}]),
    chat_body(model=7),
    splice(chat_body(), b'"messages":[{"role":"user","content":"other"}]'),
    splice(chat_body(), b'"mod\\u0065l":"claude-haiku-4-5"'),
    splice(chat_body(max_tokens=5), b'"max_tokens":6'),
    splice(chat_body(stream=True), b'"stream":false'),
    splice(chat_body(), b'"reasoning_effort":"low","reasoning_effort":"high"'),
    *MALFORMED,
]

RESPONSES_CASES: list[tuple[bytes, prepare.Recalled | None]] = [
    (responses_body(store=False), None),
    (responses_body(store=False, stream=True, max_output_tokens=100000, reasoning={"effort": "medium"}), None),
    (responses_body(input=[{"type": "message", "id": "msg_1", "role": "user", "content": "hi"}]), None),
    (responses_body(input=[{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
                    instructions="be brief", tools=[{"type": "function", "name": "f", "parameters": {}}]), None),
    (responses_body(previous_response_id="resp_1"), None),  # asks for a recall first
    (responses_body(previous_response_id="resp_1", input=[{"type": "item_reference", "id": "msg_9"}]), None),
    (responses_body(previous_response_id="resp_1"), prepare.Recalled({}, [
        {"type": "message", "id": "msg_0", "role": "user", "content": [{"type": "input_text", "text": "before"}]},
        {"type": "message", "id": "msg_0b", "role": "assistant", "content": [{"type": "output_text", "text": "yes"}]}])),
    (responses_body(input=[{"type": "item_reference", "id": "msg_9"}, {"type": "message", "id": "msg_10", "role": "user",
                                                                        "content": "and"}]),
     prepare.Recalled({"msg_9": {"type": "message", "id": "msg_9", "role": "user", "content": "first"}}, None)),
    (responses_body(store="no"), None),
    (responses_body(previous_response_id=5), None),
    (responses_body(model="claude-opus-4-6"), None),
    (responses_body(input=5), None),
    (responses_body(input=[{"type": "mystery"}]), None),
    (responses_body(reasoning={"effort": "extreme"}), None),
    (responses_body(max_output_tokens=-1), None),
    (responses_body(max_output_tokens=200000), None),
    (splice(responses_body(), b'"input":"other"'), None),
    (splice(responses_body(), b'"st\\u006fre":false'), None),
    (splice(responses_body(), b'"previous_response_id":"resp_2","previous_response_id":"resp_3"'), None),
    *((raw, None) for raw in MALFORMED),
]

GENERATED_ID = re.compile(r'(msg|item|fc|fco|ctc|rs)_[0-9a-f]{43}')  # time_ordered(): 11 + 32 hex digits


def outcome(run: Callable[[], prepare.Prepared]) -> tuple:
    """What a job gave, comparable across runs: its Prepared as a dict (ids made up on the way
    ignored), or its error whole."""
    try:
        prepared = run()
    except AntexError as exc:
        return ("error", type(exc), exc.type, exc.status, exc.message, exc.param, exc.headers)
    fields = asdict(prepared)
    if fields["items"] is not None:
        fields["items"] = [(GENERATED_ID.sub("id", item_id), GENERATED_ID.sub("id", item)) for item_id, item in fields["items"]]
    return ("prepared", fields)


async def compare(job: Callable[..., prepare.Prepared], cases: list[tuple], terms_list: list[prepare.Terms]) -> list[tuple]:
    """Every case with every terms, inline and in a worker: the same outcome."""
    pool = ParsePool(30, workers=1)
    outcomes = []
    try:
        for args in cases:
            for terms in terms_list:
                raw, *more = args
                inline = outcome(lambda: job(raw, terms, *more))
                future = pool.run(job, raw, terms, *more)
                try:
                    in_worker = ("prepared", await future)
                except AntexError as exc:
                    in_worker = ("error", type(exc), exc.type, exc.status, exc.message, exc.param, exc.headers)
                if in_worker[0] == "prepared":
                    in_worker = outcome(lambda: in_worker[1])
                assert in_worker == inline, (raw[:200], terms.plan)
                outcomes.append(inline)
    finally:
        await pool.close()
    return outcomes


async def test_messages_and_count_tokens_alike_inline_and_in_a_worker() -> None:
    outcomes = await compare(prepare.messages, [(raw,) for raw in MESSAGES_CASES], [MAX, STARTER, REFUSING])
    kinds = {entry[2] if entry[0] == "error" else "ok" for entry in outcomes}
    assert kinds == {"ok", "invalid_request_error", "not_found_error", "permission_error", "max_tokens_too_large"}
    assert any(entry[0] == "prepared" and entry[1]["upstream"] is None for entry in outcomes)  # sent as is
    assert any(entry[0] == "prepared" and entry[1]["max_tokens_sent"] == 32000 for entry in outcomes)  # lowered
    assert sum(entry[0] == "error" and "more than once" in entry[4] for entry in outcomes) == 3 * 7
    await compare(prepare.count_tokens, [(raw,) for raw in COUNT_CASES], [MAX, STARTER])


async def test_chat_completions_alike_inline_and_in_a_worker() -> None:
    outcomes = await compare(prepare.chat_completions, [(raw,) for raw in CHAT_CASES], [MAX, STARTER, REFUSING])
    messages = [entry[4] for entry in outcomes if entry[0] == "error"]
    assert any("more than once" in message for message in messages)
    assert any("reasoning_effort" in message for message in messages)  # a translation error
    prepared = [entry[1] for entry in outcomes if entry[0] == "prepared"]
    assert all("messages" not in entry["echo"] for entry in prepared)  # the conversation is not echoed


async def test_responses_alike_inline_and_in_a_worker() -> None:
    outcomes = await compare(prepare.responses, RESPONSES_CASES, [MAX, STARTER, REFUSING])
    prepared = [entry[1] for entry in outcomes if entry[0] == "prepared"]
    assert any(entry["recall"] == ("resp_1", []) for entry in prepared)
    assert any(entry["items"] for entry in prepared)
    assert any(b"before" in entry["upstream"] for entry in prepared if entry["upstream"])  # the history, replayed


def exit_at_once(raw: bytes) -> None:
    os._exit(9)  # a worker killed mid-job


def sleep_then_echo(raw: bytes, seconds: float) -> bytes:
    time.sleep(seconds)
    return raw


async def test_a_dead_worker_is_a_503_and_the_pool_is_replaced(caplog: pytest.LogCaptureFixture) -> None:
    pool = ParsePool(30, workers=1)
    try:
        assert await pool.run(sleep_then_echo, b"before", 0) == b"before"
        with pytest.raises(AntexError) as caught:
            await pool.run(exit_at_once, b"x")
        assert caught.value.status == 503 and caught.value.wire_type == "overloaded_error"
        assert "stopped before it finished" in caught.value.message
        assert await pool.run(sleep_then_echo, b"after", 0) == b"after"
        assert sum("parse worker stopped" in record.message for record in caplog.records) == 1
    finally:
        await pool.close()


async def test_a_job_past_its_deadline_is_a_503() -> None:
    pool = ParsePool(0.5, workers=1)
    try:
        await pool.run(sleep_then_echo, b"warm", 0)
        with pytest.raises(AntexError) as caught:
            await pool.run(sleep_then_echo, b"slow", 3)
        assert caught.value.status == 503 and "within 0.5 seconds" in caught.value.message
    finally:
        await pool.close()


def test_errors_cross_a_pickle_whole() -> None:
    import pickle
    error = AntexError("rate_limit_error", "slow down", headers={"retry-after": "3"}, param="model")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.type, copy.status, copy.message, copy.headers, copy.param) == ("rate_limit_error", 429, "slow down",
                                                                                {"retry-after": "3"}, "model")
