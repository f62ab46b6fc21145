"""What Antex checks before a request costs it memory or reaches the upstream: admission before the
body, body budgets, duplicate fields, the forwarding allow-lists, the estimate for an unreadable
usage; and the pure parts behind them (duplicate detection, connection counting, log lines).

The attacks themselves, against a real `antex serve`, are in tests/test_abuse.py.
"""
from __future__ import annotations

import asyncio
import json
import logging
from types import FrameType
from typing import Iterator

import orjson
from multidict import CIMultiDict
from pathlib import Path

import pytest

import antex
from aiohttp import ClientSession, http_exceptions
from hypothesis import given, settings, strategies as st

from antex import journal
from antex.client_noise import ClientFaults
from antex.connections import ANSWERED_PAST_CAP, Connections, address_group
from antex.request_body import duplicate_field, quoted
from antex.upstream.headers import request_headers, request_query
from tests.conftest import Gateway, GatewayFactory, sample_body
from tests.fake_replies import Reply, text_reply
from tests.test_hostile_input import CHAT, MESSAGES, RESPONSES, VALID, error_type, exchange, request_bytes

FIELDS = quoted("model", "max_tokens", "stream")


# admission before the body


@pytest.mark.parametrize("path", [MESSAGES, CHAT, RESPONSES])
async def test_a_key_at_its_concurrency_cap_is_refused_before_its_body_is_read(make_gateway: GatewayFactory,
                                                                               path: str) -> None:
    gateway = await make_gateway(server={"body_idle_timeout_s": 5})
    key = await gateway.create_key("solo", max_concurrent=1)
    holder = await asyncio.open_connection(*gateway.url.removeprefix("http://").split(":"))
    holder[1].write(request_bytes("POST", path, {"x-api-key": key, "Content-Length": "1000"}, content_length=False))
    await holder[1].drain()
    await asyncio.sleep(0.2)  # admitted, its slot taken, waiting for a body that never comes
    # The second is refused from its head alone: answered at once, its declared megabyte not waited for.
    answer = await exchange(gateway.url, request_bytes("POST", path, {"x-api-key": key, "Content-Length": "1000000"},
                                                       content_length=False), timeout_s=2)
    assert answer.status == 429 and error_type(path, answer.status, answer.body) == "rate_limit_error"
    holder[1].close()


@pytest.mark.parametrize("path, body", [
    (MESSAGES, sample_body(model="claude-nothing")),
    (MESSAGES, sample_body(max_tokens=10**6)),
    (CHAT, {**VALID[CHAT], "model": "claude-nothing"}),
    (RESPONSES, {**VALID[RESPONSES], "max_output_tokens": 10**6}),
    (MESSAGES, {"model": "claude-sonnet-4-6"}),
])
async def test_a_request_refused_for_its_body_frees_its_slot_and_is_never_charged(make_gateway: GatewayFactory,
                                                                                   path: str, body: dict) -> None:
    gateway = await make_gateway()
    key = await gateway.create_key("solo", max_concurrent=1)
    async with ClientSession() as http:
        for _ in range(3):  # a slot kept would make the second a 429
            async with http.post(gateway.url + path, json=body, headers={"x-api-key": key}) as resp:
                assert resp.status in (400, 404), await resp.text()
        async with http.post(gateway.url + path, json=VALID[path], headers={"x-api-key": key}) as resp:
            assert resp.status == 200
    events = await gateway.events()
    assert len(events) == 1 and events[0]["outcome"] == "complete"
    assert journal.read_open(journal.path_for(gateway.database)) == []


# body budgets


@pytest.mark.parametrize("path, shape", [(MESSAGES, "anthropic"), (CHAT, "openai")])
async def test_bodies_past_the_per_key_budget_are_a_429_and_past_the_gateway_budget_a_503(
        make_gateway: GatewayFactory, path: str, shape: str) -> None:
    gateway = await make_gateway(server={"max_buffered_body_bytes": 3 * 65536 + 4096,
                                         "max_buffered_body_bytes_per_key": 3 * 65536})
    alice, bob = await gateway.create_key("alice"), await gateway.create_key("bob")
    host, port = gateway.url.removeprefix("http://").split(":")
    held = []
    for key in (alice, alice, bob):  # 64 KiB each, arrived and waiting for the rest
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request_bytes("POST", path, {"x-api-key": key, "Content-Length": "200000"}, content_length=False)
                     + b" " * 65536)
        await writer.drain()
        held.append(writer)
    await asyncio.sleep(0.3)
    body = orjson.dumps({**VALID[path], "pad": "x" * 70000})
    over_key = await exchange(gateway.url, request_bytes("POST", path, {"x-api-key": alice}, body))
    assert over_key.status == 429 and error_type(path, over_key.status, over_key.body) == "rate_limit_error"
    assert b"bytes of request bodies" in over_key.body and over_key.headers["retry-after"]
    over_all = await exchange(gateway.url, request_bytes("POST", path, {"x-api-key": bob}, body))
    assert over_all.status == 503 and over_all.headers["retry-after"]
    wire = orjson.loads(over_all.body)
    assert (wire["error"]["type"] == "overloaded_error") and (set(wire) == {"error"}) == (shape == "openai")
    for writer in held:
        writer.close()
    await asyncio.sleep(0.3)  # the held bodies are given back when their requests end
    status_ok = await exchange(gateway.url, request_bytes("POST", path, {"x-api-key": alice}, body))
    assert status_ok.status == 200, status_ok.body[:300]


async def test_a_refused_body_gives_its_budget_back_before_its_rest_is_discarded(make_gateway: GatewayFactory) -> None:
    """Before: a body cut mid-read (here a 408) kept its bytes counted while its rest was discarded,
    up to body_timeout_s: a few stalled uploads starved every other request of the budget (503)."""
    gateway = await make_gateway(server={"max_buffered_body_bytes": 3 * 65536 + 4096, "body_idle_timeout_s": 1,
                                         "body_timeout_s": 30})
    alice, bob = await gateway.create_key("alice"), await gateway.create_key("bob")
    host, port = gateway.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request_bytes("POST", MESSAGES, {"x-api-key": alice, "Content-Length": "200000"}, content_length=False)
                 + b" " * (2 * 65536))  # then it stalls: a 408 once idle, and its rest is discarded
    await writer.drain()
    async with asyncio.timeout(5):
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 408")
    # the discard now waits up to body_idle_timeout_s for the rest that never comes
    body = orjson.dumps({**VALID[MESSAGES], "pad": "x" * 70000})
    answer = await exchange(gateway.url, request_bytes("POST", MESSAGES, {"x-api-key": bob}, body))
    assert answer.status == 200, answer.body[:300]
    writer.close()


# duplicate fields


@pytest.mark.parametrize("raw, expected", [
    (b'{"model":"a","max_tokens":1}', None),
    (b'{"model":"a","model":"b"}', "model"),
    (b'{"model":"a","mod\\u0065l":"b"}', "model"),
    (b'{"\\u006dodel":"a","model":"b"}', "model"),
    (b'{"max_tokens":1,"max\\u005ftokens":2}', "max_tokens"),
    (b'{"stream":true,"stream":false}', "stream"),
    (b'{"model":"a","metadata":{"model":"b"}}', None),  # nested: not a top-level duplicate
    (b'{"model":"a","messages":[{"content":"\\"model\\""}]}', None),
    (b'{"model":"a","text":"model"}', None),
    (b'{"model":"a","x":"\\u00e9\\u4e2d"}', None),  # escapes of non-ASCII text: the fast path
    (b'{"other":1,"other":2}', None),  # a field Antex does not read
    (b'{"model":"a","x":{"model":"b"},"model":"c"}', "model"),
    (b'{"model": "a", "max_tokens": 1}', None),  # not orjson's own bytes: the scan decides
    (b'{"model": "a", "model": "b"}', "model"),
    (b'{"model":"a","n":123456789012345678901234567890,"model":"b"}', "model"),  # orjson cannot write it back
    (b'{\n  "model": "a",\n  "max_tokens": 1\n}', None),  # pretty-printed: the colon count proves it
    (b'{"model": "a:b", "x": "c\\u003ad"}', None),  # colons inside strings, one escaped
    (b'{"model": "a", "x": "\\u003a", "model": "b"}', "model"),  # an escaped colon beside a duplicate
    (b'{"model": "a", "x": "\\\\u003a", "model": "b"}', "model"),  # an escaped backslash, then text
    (b'{"model": "a", "x": {"y": 1, "y": 2}}', None),  # a nested duplicate of a field Antex does not read
], ids=repr)
def test_duplicate_field_table(raw: bytes, expected: str | None) -> None:
    assert duplicate_field(raw, orjson.loads(raw), FIELDS) == expected


NAMES = ["model", "max_tokens", "stream", "messages", "x", "metadata"]


def _escaped(name: str, draw: st.DrawFn) -> str:
    """`name` as a JSON string body, some characters written as \\u escapes."""
    return "".join(f"\\u{ord(ch):04x}" if draw(st.booleans()) else ch for ch in name)


@st.composite
def objects(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    names = draw(st.lists(st.sampled_from(NAMES), max_size=7))
    parts = []
    for name in names:
        key = _escaped(name, draw) if draw(st.integers(0, 3)) == 0 else name
        value = draw(st.sampled_from(['1', '"model"', '{"model":1}', '["stream"]', 'true', '"\\u00e9"', '"a:b"',
                                      '"\\u003a"', '"\\\\u003a"', '{"y":1,"y":2}', '{"y":"\\u003A"}']))
        space = draw(st.sampled_from(["", " ", "\n  "]))
        parts.append(f'"{key}":{space}{value}')
    return ("{" + ",".join(parts) + "}").encode(), names


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(objects())
def test_duplicate_field_agrees_with_a_full_parse(case: tuple[bytes, list[str]]) -> None:
    raw, names = case
    pairs = json.loads(raw, object_pairs_hook=list)
    wanted = {"model", "max_tokens", "stream"}
    seen, expected = set(), None
    for name, _ in pairs:
        if name in wanted and name in seen and expected is None:
            expected = name
        seen.add(name)
    assert duplicate_field(raw, orjson.loads(raw), FIELDS) == expected


@pytest.mark.parametrize("path", [MESSAGES, CHAT, RESPONSES])
async def test_duplicate_fields_are_refused_in_the_doors_shape(gateway: Gateway, path: str) -> None:
    key = await gateway.create_key("alice")
    raw = orjson.dumps(VALID[path])[:-1] + b',"mod\\u0065l":"claude-haiku-4-5"}'
    answer = await exchange(gateway.url, request_bytes("POST", path, {"x-api-key": key}, raw))
    assert answer.status == 400 and error_type(path, answer.status, answer.body) == "invalid_request_error"
    assert b"model: appears more than once" in answer.body
    assert gateway.fake.requests == []


# what reaches the upstream


HOSTILE_HEADERS = {
    "Via": "1.1 evil", "CF-Connecting-IP": "1.2.3.4", "True-Client-IP": "1.2.3.4", "X-HTTP-Method-Override": "DELETE",
    "X-Forwarded-For": "1.2.3.4", "Forwarded": "for=1.2.3.4", "Cookie": "a=1", "Origin": "https://evil",
    "X-Original-URL": "/admin", "X-Stainless-Hop": "named in Connection", "Connection": "keep-alive, X-Stainless-Hop",
    "Proxy-Authorization": "Basic x", "TE": "trailers", "X-Anything": "1",
    "Authorization": "Basic eDp5",
}
FORWARDED = {
    "anthropic-version": "2023-06-01", "anthropic-beta": "interleaved-thinking-2025-05-14",
    "x-stainless-retry-count": "0", "x-claude-code-session-id": "3f0c", "user-agent": "claude-cli/2.1.0 (external, cli)",
    "accept": "application/json", "idempotency-key": "abc", "x-app": "cli",
}


async def test_only_allowed_headers_and_parameters_reach_the_upstream(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    headers = {**HOSTILE_HEADERS, **FORWARDED, "x-api-key": key}
    raw = request_bytes("POST", f"{MESSAGES}?beta=true&api_key={key}&foo=1", headers, orjson.dumps(VALID[MESSAGES]))
    raw = raw.replace(b"\r\n\r\n", b"\r\nanthropic-custom: caf\xc3\xa9\r\nx-stainless-os: \xff\xfe\r\n\r\n", 1)
    answer = await exchange(gateway.url, raw)
    assert answer.status == 200, answer.body
    (sent,) = gateway.fake.requests
    assert sent.query_string == "beta=true"
    names = {name.lower() for name in sent.headers}
    allowed = set(FORWARDED) | {"x-api-key", "accept-encoding", "content-type", "content-length", "host"}
    assert names <= allowed, names - allowed
    assert set(FORWARDED) <= names
    assert sent.headers["x-api-key"] != key and key not in str(sent.headers)
    assert all(value.isascii() for value in sent.headers.values())


def test_request_headers_and_query_are_allow_lists() -> None:
    client = CIMultiDict({"Anthropic-Beta": "b", "X-Stainless-Lang": "js", "X-Claude-Code-Session-Id": "s", "Via": "x",
                          "Connection": "anthropic-beta", "User-Agent": "ü"})
    sent = dict(request_headers(client, "operator"))
    assert set(sent) == {"X-Stainless-Lang", "X-Claude-Code-Session-Id", "x-api-key", "accept-encoding",
                         "anthropic-version", "content-type"}
    assert request_query({"beta": "true", "api_key": "k"}) == "beta=true"
    assert request_query({"beta": "false"}) == "" and request_query({}) == ""


# usage that cannot be read


async def test_a_200_whose_usage_cannot_be_read_is_charged_an_estimate(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(Reply(malformed=True))
    async with ClientSession() as http:
        async with http.post(gateway.url + MESSAGES, json=sample_body(), headers={"x-api-key": key}) as resp:
            assert resp.status == 200
    (event,) = await gateway.events()
    assert event["outcome"] == "complete" and event["estimated"] and event["input_tokens"] > 0
    assert event["micro_credits"] > 0


# connections and log lines


def test_connections_are_capped_per_address_group_and_in_all() -> None:
    import ipaddress
    counter = Connections(limit=6, per_ip_limit=2, exempt=(ipaddress.ip_network("10.0.0.0/8"),))
    assert counter.enter("192.0.2.1") == counter.enter("192.0.2.1") == ("192.0.2.1", False)
    assert counter.enter("192.0.2.1") == ("192.0.2.1", True)  # its third: let in, to be answered 503
    assert counter.enter("2001:db8::1") == counter.enter("2001:db8::ffff") == ("2001:db8::/64", False)
    assert counter.enter("10.1.1.1") == ("10.1.1.1", False)  # a trusted proxy: no per-address cap...
    assert counter.enter("192.0.2.99") is None  # ...but the total still applies, and is closed at once
    assert counter.enter("2001:db8::2") is None  # same /64, past its cap, but no room in all
    counter.leave("192.0.2.1", past_cap=True)
    assert counter.past_cap == {} and counter.open == 5
    counter.leave("192.0.2.1")
    assert counter.enter("192.0.2.1") == ("192.0.2.1", False) and counter.open == 5
    assert address_group("not an address") == "not an address"


def test_only_a_few_connections_past_an_addresss_cap_are_answered() -> None:
    counter = Connections(limit=1000, per_ip_limit=1)
    assert counter.enter("192.0.2.1") == ("192.0.2.1", False)
    answered = [counter.enter("192.0.2.1") for _ in range(ANSWERED_PAST_CAP)]
    assert answered == [("192.0.2.1", True)] * ANSWERED_PAST_CAP
    assert counter.enter("192.0.2.1") is None  # past those: closed at once


def test_a_clients_malformed_request_is_one_line_without_its_bytes(caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk_live_" + "S" * 43
    try:
        raise http_exceptions.BadHttpMessage(f"Invalid header value: x-api-key: {secret}\x01")
    except http_exceptions.BadHttpMessage as exc:
        error = exc
    logger = logging.getLogger("test.aiohttp.server")
    logger.addFilter(noise := ClientFaults())
    try:
        with caplog.at_level(logging.DEBUG, "test.aiohttp.server"):
            for _ in range(30):
                logger.exception("Error handling request from %s", "192.0.2.1", exc_info=error)
            logger.error("something else")
    finally:
        logger.removeFilter(noise)
    assert secret not in caplog.text and "S" * 10 not in caplog.text and "Traceback" not in caplog.text
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "malformed or abandoned request from 192.0.2.1: BadHttpMessage (400)"
    assert len(lines) == 21 and lines[-1] == "something else"  # 20 a period, then the rest dropped


# clients still read a refusal whose upload was cut


async def test_the_sdks_read_a_refusal_sent_before_their_large_body(gateway: Gateway) -> None:
    """A body refused unread is not drained: its connection closes once answered. The SDKs' HTTP
    client (httpcore) reads that answer after its upload is cut, so the caller sees the real error."""
    import anthropic
    import openai

    text = "x" * (16 * 1024 * 1024)  # far past what loopback buffers hold
    claude = anthropic.AsyncAnthropic(api_key="sk_live_" + "A" * 43, base_url=gateway.url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        await claude.messages.create(model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": text}])
    gpt = openai.AsyncOpenAI(api_key="sk_live_" + "A" * 43, base_url=gateway.url + "/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await gpt.chat.completions.create(model="claude-sonnet-4-6", messages=[{"role": "user", "content": text}])
    await claude.close()
    await gpt.close()


# a stream keeps nothing of its request


MARKER = "marker-" + "q" * 24


# The package's own folder: a checkout may itself sit in a folder named antex (tests, fakes).
ANTEX_PACKAGE = str(Path(antex.__file__).parent) + "/"


def _antex_frames() -> Iterator[FrameType]:
    """Every frame of Antex's own code that a task is suspended in, down each await chain."""
    for task in asyncio.all_tasks():
        awaited = task.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is not None and frame.f_code.co_filename.startswith(ANTEX_PACKAGE):
                yield frame
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)


def _holds(value: object, depth: int = 0) -> bool:
    """Whether `value` is or contains the request's text (its bytes, or its parsed conversation)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return MARKER.encode() in value
    if isinstance(value, str):
        return value == MARKER
    if depth > 8:
        return False
    if isinstance(value, dict):
        return any(_holds(item, depth + 1) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds(item, depth + 1) for item in value)
    return False


@pytest.mark.parametrize("path, body", [
    (MESSAGES, sample_body(stream=True, messages=[{"role": "user", "content": [{"type": "text", "text": MARKER}]}])),
    (CHAT, {**VALID[CHAT], "stream": True, "messages": [{"role": "user", "content": [{"type": "text", "text": MARKER}]}]}),
    (RESPONSES, {**VALID[RESPONSES], "stream": True, "store": False,
                 "input": [{"role": "user", "content": [{"type": "input_text", "text": MARKER}]}]}),
])
async def test_a_running_stream_keeps_neither_the_body_nor_its_parse(gateway: Gateway, path: str, body: dict) -> None:
    key = await gateway.create_key("alice")
    gateway.fake.queue(text_reply("one two three four five six seven eight", events=8, delay_s=0.1))
    async with ClientSession() as http:
        async with http.post(gateway.url + path, json=body, headers={"x-api-key": key}) as resp:
            assert resp.status == 200
            await resp.content.readany()  # the stream runs
            held = [(frame.f_code.co_name, name) for frame in _antex_frames()
                    for name, value in frame.f_locals.items() if _holds(value)]
            assert held == [], held
            await resp.read()
