"""Hostile input: whatever a client sends, Antex answers with a clear 4xx in the door's error shape
(Anthropic's on /v1/messages, OpenAI's on /v1/chat/completions and /v1/responses), never a 500 or
a traceback, and keeps serving everyone else afterwards.

Hand-picked attacks run against the app in process (raw sockets where an HTTP client would refuse
to send the bytes); property-based tests then throw random bodies and headers at a real
`antex serve` process and read its log afterwards.
"""
from __future__ import annotations

import asyncio
import base64
import copy
import gzip
import http.client
import subprocess
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from aiohttp import ClientSession
from hypothesis import HealthCheck, given, settings, strategies as st

from antex.translate.response_items import REASONING_PACK_PREFIX
from tests.conftest import Gateway, GatewayFactory, sample_body
from tests.processes import cli_key, start_antex, start_fake_upstream, stop, live_config

MESSAGES, CHAT, RESPONSES = "/v1/messages", "/v1/chat/completions", "/v1/responses"
DOORS = (MESSAGES, CHAT, RESPONSES)
VALID = {
    MESSAGES: sample_body(),
    CHAT: {"model": "claude-sonnet-4-6", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]},
    RESPONSES: {"model": "claude-sonnet-4-6", "max_output_tokens": 32, "input": "hi"},
}
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


# reading answers: the door's error shape, and raw HTTP for what clients refuse to send


def error_type(path: str, status: int, body: bytes) -> str:
    """The error's type, after checking the body is exactly the door's error shape."""
    assert 400 <= status < 500, (status, body[:300])
    assert b"Traceback" not in body and b'File "' not in body
    error = orjson.loads(body)
    if path.startswith((CHAT, RESPONSES)):
        assert set(error) == {"error"}, error
        assert set(error["error"]) >= {"message", "type", "code"}
    else:
        assert error["type"] == "error" and error["request_id"], error
    assert isinstance(error["error"]["type"], str) and error["error"]["type"]
    assert isinstance(error["error"]["message"], str) and error["error"]["message"]
    return error["error"]["type"]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes
    closed: bool  # the server closed the connection after answering


async def exchange(url: str, data: bytes, *, then: list[tuple[float, bytes]] = (), timeout_s: float = 5.0) -> Answer:
    """Write raw bytes (then more, after pauses), read one HTTP/1.x answer."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        for pause_s, more in then:
            await asyncio.sleep(pause_s)
            writer.write(more)
            await writer.drain()
        async with asyncio.timeout(timeout_s):
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in filter(None, lines):
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", 0)))
            closed = headers.get("connection", "").lower() == "close" or status_line.startswith("HTTP/1.0")
        return Answer(int(status_line.split()[1]), headers, body, closed)
    finally:
        writer.close()


def request_bytes(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"",
                  *, content_length: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: antex.test"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def post(gateway: Gateway, path: str, key: str | None, data: bytes | Any, headers: dict | None = None) -> tuple[int, bytes]:
    sent = {"content-type": "application/json", **({"x-api-key": key} if key else {}), **(headers or {})}
    body = data if isinstance(data, bytes) or hasattr(data, "__aiter__") else orjson.dumps(data)
    async with ClientSession() as http_session:
        async with http_session.post(gateway.url + path, data=body, headers=sent) as resp:
            return resp.status, await resp.read()


async def assert_still_serving(gateway: Gateway, key: str) -> None:
    for path in DOORS:
        status, body = await post(gateway, path, key, VALID[path])
        assert status == 200, (path, body[:300])


# bodies: too big, too slow, not JSON, too deep, wrong types


@pytest.mark.parametrize("path", DOORS)
@pytest.mark.parametrize("how", ["content-length", "chunked", "declared, never sent"])
async def test_oversized_bodies_are_413_in_the_doors_shape(make_gateway: GatewayFactory, path: str, how: str) -> None:
    gateway = await make_gateway(server={"max_body_bytes": 1024})
    key = await gateway.create_key("alice")
    if how == "declared, never sent":  # refused from the headers alone, before a body byte arrives
        head = request_bytes("POST", path, {"x-api-key": key, "Content-Length": str(10**12)}, content_length=False)
        answer = await exchange(gateway.url, head, timeout_s=2)
        status, body = answer.status, answer.body
    elif how == "chunked":
        async def chunks():
            for _ in range(100):
                yield b'{"pad": "' + b"y" * 500 + b'"}'
        status, body = await post(gateway, path, key, chunks())
    else:
        status, body = await post(gateway, path, key, {**VALID[path], "pad": "x" * 2048})
    assert status == 413 and error_type(path, status, body) == "payload_too_large"
    assert b"1024 bytes" in body
    assert gateway.fake.requests == []
    await assert_still_serving(gateway, key)


@pytest.mark.parametrize("path", [MESSAGES, CHAT])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_that_stops_arriving_is_cut_off(make_gateway: GatewayFactory, path: str, framing: str) -> None:
    """Slow loris: headers, a few bytes, then nothing. aiohttp has no body timeout; Antex has one."""
    gateway = await make_gateway(server={"body_idle_timeout_s": 0.3})
    key = await gateway.create_key("alice")
    if framing == "chunked":
        head = request_bytes("POST", path, {"x-api-key": key, "Transfer-Encoding": "chunked"}, content_length=False)
        first = b"5\r\n{\"mod\r\n"
    else:
        head = request_bytes("POST", path, {"x-api-key": key, "Content-Length": "500"}, content_length=False)
        first = b'{"model"'
    answer = await exchange(gateway.url, head + first, timeout_s=3)
    assert answer.status == 408
    assert "stopped arriving" in orjson.loads(answer.body)["error"]["message"]
    error_type(path, answer.status, answer.body)
    assert gateway.fake.requests == []
    await assert_still_serving(gateway, key)


async def test_a_slow_but_steady_upload_is_not_cut_off(make_gateway: GatewayFactory) -> None:
    """The idle timeout is on silence: a slow link still gets through, within the total deadline."""
    gateway = await make_gateway(server={"body_idle_timeout_s": 0.3})
    key = await gateway.create_key("alice")
    body = orjson.dumps(VALID[MESSAGES])
    pieces = [body[i:i + 10] for i in range(0, len(body), 10)]
    head = request_bytes("POST", MESSAGES, {"x-api-key": key, "Content-Length": str(len(body))}, content_length=False)
    answer = await exchange(gateway.url, head + pieces[0], then=[(0.1, piece) for piece in pieces[1:]], timeout_s=5)
    assert len(pieces) * 0.1 > 0.3 * 2  # the whole upload took longer than the timeout, several times over
    assert answer.status == 200, answer.body


DEEP = b"[" * 100_000 + b"]" * 100_000
FORGED_REASONING = REASONING_PACK_PREFIX + base64.urlsafe_b64encode(b'{"type": ["thinking"]}').decode()


@pytest.mark.parametrize("path", DOORS)
@pytest.mark.parametrize("raw", [
    b"",
    b"{not json",
    b"[1, 2]", b'"text"', b"null", b"1", b"true",
    b"\xff\xfe{}",
    b'{"model": "claude-\xff\xfe"}',  # invalid UTF-8 inside a string
    b'{"model": "\\ud800"}',  # a lone surrogate, escaped
    b'{"model": "\xed\xa0\x80"}',  # a lone surrogate, encoded
    b"\xef\xbb\xbf" + orjson.dumps(VALID[MESSAGES]),  # a byte-order mark
    b'{"max_tokens": NaN}', b'{"max_tokens": 1e999}', b'{"max_tokens": -Infinity}',
    DEEP,  # orjson refuses nesting past 1024 levels: a 400, not a RecursionError
    b'{"model": "claude-sonnet-4-6", "messages": ' + DEEP + b"}",
    b'{"model": "claude-sonnet-4-6"}' + b" trailing",
    b'{"model": "claude-sonnet-4-6", "messages": [], "max_tokens": 5',  # cut short
    b"\x00" * 64,
], ids=lambda raw: repr(raw[:24]))
async def test_bodies_that_are_not_a_json_object_are_a_400(gateway: Gateway, path: str, raw: bytes) -> None:
    key = await gateway.create_key("alice")
    status, body = await post(gateway, path, key, raw)
    assert status == 400 and error_type(path, status, body) == "invalid_request_error"
    assert gateway.fake.requests == []


def chat(**fields: Any) -> dict:
    return {**VALID[CHAT], **fields}


def responses(**fields: Any) -> dict:
    return {**VALID[RESPONSES], **fields}


def user_says(content: Any) -> list:
    return [{"role": "user", "content": content}]


@pytest.mark.parametrize("path, body, names", [
    (MESSAGES, sample_body(model=["claude-sonnet-4-6"]), "model"),
    (MESSAGES, sample_body(max_tokens=1.5), "max_tokens"),
    (MESSAGES, sample_body(max_tokens=-3), "max_tokens"),
    (MESSAGES, sample_body(max_tokens=None), "max_tokens"),
    (MESSAGES, sample_body(messages="hi"), "messages"),
    (MESSAGES, sample_body(stream=1), "stream"),
    ("/v1/messages/count_tokens", {"model": 5, "messages": []}, "model"),
    ("/v1/messages/count_tokens", {"messages": []}, "model"),
    (CHAT, chat(model=5), "model"),
    (CHAT, chat(messages={}), "messages"),
    (CHAT, chat(messages="hi"), "messages"),
    (CHAT, chat(messages=[]), "messages"),
    (CHAT, chat(messages=[5]), "messages[0]"),
    (CHAT, chat(messages=[{"role": 5, "content": "hi"}]), "messages[0].role"),
    (CHAT, chat(messages=user_says(5)), "messages[0].content"),
    (CHAT, chat(messages=user_says([5])), "messages[0].content[0]"),
    (CHAT, chat(messages=user_says([{"type": "text", "text": 5}])), "messages[0].content[0].text"),
    (CHAT, chat(messages=user_says([{"type": "image_url", "image_url": {"url": 5}}])), "image_url"),
    (CHAT, chat(messages=user_says([{"type": "image_url", "image_url": "javascript:alert(1)"}])), "image_url"),
    (CHAT, chat(messages=user_says([{"type": "file", "file": "x"}])), "file"),
    (CHAT, chat(messages=[{"role": "assistant", "tool_calls": {"id": "c"}}]), "tool_calls"),
    (CHAT, chat(messages=[{"role": "assistant", "tool_calls": [{"function": []}]}]), "function"),
    (CHAT, chat(messages=[{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": 5}}]}]),
     "arguments"),
    (CHAT, chat(messages=[{"role": "tool", "tool_call_id": 5, "content": "x"}]), "tool_call_id"),
    (CHAT, chat(tools={}), "tools"),
    (CHAT, chat(tools=[5]), "tools[0]"),
    (CHAT, chat(tools=[{"type": "function", "function": []}]), "tools[0]"),
    (CHAT, chat(tools=[{"type": "function", "function": {"name": 5}}]), "name"),
    (CHAT, chat(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]), "parameters"),
    (CHAT, chat(tool_choice=5), "tool_choice"),
    (CHAT, chat(tool_choice="sometimes"), "tool_choice"),
    (CHAT, chat(tool_choice={"type": "function", "function": ["f"]}), "tool_choice"),
    (CHAT, chat(tool_choice={"type": "function", "function": {"name": 5}}), "tool_choice"),
    (CHAT, chat(stream="false"), "stream"),
    (CHAT, chat(stream=1), "stream"),
    (CHAT, chat(stream=True, stream_options="include_usage"), "stream_options"),
    (CHAT, chat(stream=True, stream_options=[True]), "stream_options"),
    (CHAT, chat(max_tokens="5"), "max_tokens"),
    (CHAT, chat(max_tokens=0), "max_tokens"),
    (CHAT, chat(max_tokens=True), "max_tokens"),
    (CHAT, chat(max_completion_tokens={}), "max_completion_tokens"),
    (CHAT, chat(temperature="hot"), "temperature"),
    (CHAT, chat(top_p=[1]), "top_p"),
    (CHAT, chat(stop=5), "stop"),
    (CHAT, chat(stop=[5]), "stop"),
    (CHAT, chat(user=5), "user"),
    (CHAT, chat(response_format="json"), "response_format"),
    (CHAT, chat(response_format={"type": "json_schema", "json_schema": []}), "schema"),
    (CHAT, chat(reasoning_effort=5), "reasoning_effort"),
    (CHAT, chat(n=2), "n"),
    (RESPONSES, responses(model=None), "model"),
    (RESPONSES, responses(input=5), "input"),
    (RESPONSES, responses(input={}), "input"),
    (RESPONSES, responses(input=[5]), "input[0]"),
    (RESPONSES, responses(input=[{"type": "message", "role": 5, "content": "x"}]), "role"),
    (RESPONSES, responses(input=[{"role": "user", "content": 5}]), "content"),
    (RESPONSES, responses(input=[{"role": "user", "content": [{"type": "input_image", "image_url": 5}]}]), "image_url"),
    (RESPONSES, responses(input=[{"type": "function_call", "call_id": 5, "name": "f", "arguments": "{}"}]), "input[0]"),
    (RESPONSES, responses(input=[{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]),
     "arguments"),
    (RESPONSES, responses(input=[{"type": "function_call_output", "call_id": "c", "output": 5}]), "output"),
    (RESPONSES, responses(input=[{"type": "item_reference", "id": 5}]), "input[0]"),
    (RESPONSES, responses(instructions=5), "instructions"),
    (RESPONSES, responses(tools={}), "tools"),
    (RESPONSES, responses(tools=[{"type": "function", "name": 5}]), "name"),
    (RESPONSES, responses(tools=[{"type": "custom", "name": ["apply_patch"]}]), "name"),
    (RESPONSES, responses(tool_choice=5), "tool_choice"),
    (RESPONSES, responses(tool_choice={"type": "function", "name": 5}), "tool_choice"),
    (RESPONSES, responses(text={"format": {"type": 5}}), "text.format"),
    (RESPONSES, responses(text={"format": {"type": "json_schema", "schema": 5}}), "schema"),
    (RESPONSES, responses(reasoning={"effort": 5}), "reasoning.effort"),
    (RESPONSES, responses(max_output_tokens="5"), "max_output_tokens"),
    (RESPONSES, responses(temperature="x"), "temperature"),
    (RESPONSES, responses(stream="true"), "stream"),
    (RESPONSES, responses(previous_response_id=5), "previous_response_id"),
    (RESPONSES, responses(store="yes"), "store"),
    (RESPONSES, responses(user=5), "user"),
], ids=lambda value: value if isinstance(value, str) and value.startswith("/") else None)
async def test_wrong_types_in_every_field_the_gateway_reads(gateway: Gateway, path: str, body: dict, names: str) -> None:
    key = await gateway.create_key("alice")
    status, answer = await post(gateway, path, key, body)
    assert status == 400, answer
    assert error_type(path, status, answer) == "invalid_request_error"
    assert names in orjson.loads(answer)["error"]["message"], answer
    assert gateway.fake.requests == []


@pytest.mark.parametrize("path, body", [
    (RESPONSES, responses(input=[{"role": "user", "content": "hi"},
                                 {"type": "reasoning", "summary": [], "encrypted_content": FORGED_REASONING}])),
    (RESPONSES, responses(tool_choice={"type": "web_search"})),  # a hosted tool's choice: dropped with the tool
    (CHAT, chat(stream_options=None, parallel_tool_calls="yes", seed=[1], logit_bias=5)),  # ignored fields
    (MESSAGES, sample_body(max_tokens=64, extra={"deep": [[[[[[1]]]]]]})),
])
async def test_odd_but_harmless_fields_are_accepted(gateway: Gateway, path: str, body: dict) -> None:
    key = await gateway.create_key("alice")
    status, answer = await post(gateway, path, key, body)
    assert status == 200, answer


# content encodings: decoded once, never forwarded as if still encoded


async def test_a_gzip_body_is_decoded_and_forwarded_plain(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    body = orjson.dumps(VALID[MESSAGES])
    status, answer = await post(gateway, MESSAGES, key, gzip.compress(body), headers={"content-encoding": "gzip"})
    assert status == 200, answer
    (sent,) = gateway.fake.requests
    assert sent.body == body and "content-encoding" not in sent.headers


@pytest.mark.parametrize("path", DOORS)
@pytest.mark.parametrize("encoding, data", [
    ("gzip", b'{"model": "not gzip at all"}'),
    ("deflate", b"\x00\x01\x02 not deflate"),
    ("gzip", gzip.compress(b'{"model": "cut"}')[:12]),
])
async def test_a_body_that_does_not_decode_is_a_400(gateway: Gateway, path: str, encoding: str, data: bytes) -> None:
    key = await gateway.create_key("alice")
    status, body = await post(gateway, path, key, data, headers={"content-encoding": encoding})
    assert status == 400 and error_type(path, status, body) == "invalid_request_error"
    assert gateway.fake.requests == []
    await assert_still_serving(gateway, key)


async def test_a_decompression_bomb_stops_at_the_body_limit(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(server={"max_body_bytes": 64 * 1024})
    key = await gateway.create_key("alice")
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = packer.compress(b" " * (32 * 1024 * 1024)) + packer.flush()  # 32 MiB of spaces in ~32 KiB
    status, body = await post(gateway, MESSAGES, key, bomb, headers={"content-encoding": "gzip"})
    assert status == 413 and error_type(MESSAGES, status, body) == "payload_too_large"


# HTTP itself: what aiohttp's parser refuses, before any route runs


@pytest.mark.parametrize("data", [
    request_bytes("GET", "/v1/models", {"X-Big": "a" * 70_000}),
    request_bytes("GET", "/v1/models", {"A" * 70_000: "1"}),
    request_bytes("GET", "/v1/models", {f"X-H{i}": "1" for i in range(200)}),
    request_bytes("GET", "/v1/models?" + "a" * 20_000),
    request_bytes("POST", MESSAGES, {"anthropic-beta": "a\rSet-Cookie: x=1"}),  # bare CR
    request_bytes("POST", MESSAGES, {"anthropic-beta": "a\nSet-Cookie: x=1"}),  # bare LF
    request_bytes("POST", MESSAGES, {"anthropic-beta": "a\x00b"}),
    request_bytes("POST", MESSAGES, {"anthropic-beta": "a\r\n b"}),  # obsolete line folding
    request_bytes("POST", MESSAGES, {"Bad Name": "1"}),
    request_bytes("FOO", MESSAGES),
    request_bytes("POST", MESSAGES, {"Transfer-Encoding": "chunked"}, b"5\r\nhello\r\n0\r\n\r\n"),  # and Content-Length
    request_bytes("POST", MESSAGES, {"Transfer-Encoding": "chunked"}, b"zz\r\nhello\r\n0\r\n\r\n", content_length=False),
    request_bytes("POST", MESSAGES, {"Content-Length": "-1"}, content_length=False),
    request_bytes("POST", MESSAGES, {"Content-Length": "1, 2"}, content_length=False),
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS ClientHello on the plain port
], ids=["huge-value", "huge-name", "200-headers", "long-line", "bare-cr", "bare-lf", "nul", "obs-fold",
        "space-in-name", "bad-method", "cl-and-te", "bad-chunk", "negative-cl", "double-cl", "tls-hello"])
async def test_malformed_http_is_refused_before_any_route(gateway: Gateway, data: bytes) -> None:
    """aiohttp answers these itself, in plain text (the request never reaches a route, so the
    door's JSON shape cannot apply): always a 4xx that closes the connection, no traceback."""
    key = await gateway.create_key("alice")
    answer = await exchange(gateway.url, data)
    assert 400 <= answer.status < 500 and answer.closed, answer
    assert b"Traceback" not in answer.body and "set-cookie" not in answer.headers
    assert gateway.fake.requests == []
    await assert_still_serving(gateway, key)


async def test_nothing_a_client_sends_becomes_a_response_header(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    answer = await exchange(gateway.url, request_bytes("GET", "/v1/nothing%0d%0aSet-Cookie:%20a=1%0d%0a"))
    assert answer.status == 404 and "set-cookie" not in answer.headers
    body = orjson.dumps(sample_body(model="x\r\nSet-Cookie: a=1\r\n\r\n<script>"))
    answer = await exchange(gateway.url, request_bytes("POST", MESSAGES, {"x-api-key": key}, body))
    assert answer.status == 404 and "set-cookie" not in answer.headers
    assert answer.headers["content-type"].startswith("application/json")  # the model name stays inside JSON
    # Bytes that are not UTF-8 in a header that is forwarded: passed on or refused, never a 500.
    raw = request_bytes("POST", MESSAGES, {"x-api-key": key}, orjson.dumps(VALID[MESSAGES]))
    raw = raw.replace(b"Host: antex.test", b"Host: antex.test\r\nanthropic-beta: caf\xe9-\xff\xfe")
    answer = await exchange(gateway.url, raw)
    assert answer.status < 500, answer


@pytest.mark.parametrize("expect", ["0", "\x80\xff", "200-ok", "100-continue, foo"])
async def test_an_unknown_expectation_is_ignored_not_a_417_or_a_500(gateway: Gateway, expect: str) -> None:
    """aiohttp's own Expect handling answers before any middleware (plain-text 417; a 500 for a
    value that is not UTF-8). RFC 9110 lets a server ignore an expectation it does not know."""
    key = await gateway.create_key("alice")
    body = orjson.dumps(VALID[CHAT])
    answer = await exchange(gateway.url, request_bytes("POST", CHAT, {"x-api-key": key, "Expect": expect}, body))
    assert answer.status == 200, answer
    async with ClientSession() as http_session:  # 100-continue still works as it should
        async with http_session.post(gateway.url + CHAT, data=body, expect100=True, headers={"x-api-key": key}) as resp:
            assert resp.status == 200


EXPECTATIONS = ["foo", "\x80\xff", "100-continue, foo"]


async def test_an_unknown_expectation_changes_no_answer_on_any_route(gateway: Gateway) -> None:
    """Every route aiohttp knows, the 404 and the 405 ones included: an `Expect` Antex does not know
    gets the answer the request gets without it (for the 404s and 405s, the middleware's JSON)."""
    key = await gateway.create_key("alice")
    asked = []
    for route in gateway.app.router.routes():
        if route.method == "HEAD":  # a GET route's twin: asked as GET (a HEAD answer has no body to read)
            continue
        method = "GET" if route.method == "*" else route.method
        path = route.resource.canonical.replace("{path:.*}", "no/such/route")
        path = path.replace("{", "").replace("}", "")  # /v1/models/{model_id} -> /v1/models/model_id
        asked.append((method, path))
    asked += [("GET", MESSAGES), ("DELETE", CHAT), ("POST", "/"), ("PUT", "/healthz"), ("GET", "/v1/nothing")]
    for method, path in asked:
        body = orjson.dumps(VALID.get(path, {})) if method == "POST" else b""
        plain = await exchange(gateway.url, request_bytes(method, path, {"x-api-key": key}, body))
        for expect in EXPECTATIONS:
            answer = await exchange(gateway.url, request_bytes(method, path, {"x-api-key": key, "Expect": expect}, body))
            assert (answer.status, answer.headers.get("content-type")) == (plain.status, plain.headers.get("content-type")), \
                (method, path, expect, answer)
            if answer.status in (404, 405) and not path.startswith("/static/"):  # the dashboard's own 404s are text
                assert answer.headers["content-type"].startswith("application/json"), answer
                assert error_type(path, answer.status, answer.body) in ("not_found_error", "method_not_allowed"), answer
    assert ("POST", "/v1/messages") in asked and ("GET", "/v1/nothing") in asked


async def test_100_continue_curl_style(gateway: Gateway) -> None:
    """Headers first, the body only once the 100 arrived, as curl does with a large upload."""
    key = await gateway.create_key("alice")
    body = orjson.dumps(VALID[MESSAGES])
    host, port = gateway.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = request_bytes("POST", MESSAGES, {"x-api-key": key, "Expect": "100-continue",
                                                "content-type": "application/json"}, body)[:-len(body)]
        writer.write(head)
        async with asyncio.timeout(5):
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(body)
            status_line = (await reader.readuntil(b"\r\n")).decode()
            headers = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
    finally:
        writer.close()
    assert status_line.split()[1] == "200", status_line
    assert "content-type: application/json" in headers


@pytest.mark.parametrize("method, path, who, status", [
    ("POST", MESSAGES, "nobody", 401),
    ("POST", MESSAGES, "busy", 429),
    ("POST", CHAT, "busy", 429),
    ("POST", "/v1/messages/count_tokens", "nobody", 401),
    ("POST", "/v1/messages/batches", "alice", 404),
    ("GET", MESSAGES, "alice", 405),
    ("POST", "/healthz", "alice", 405),
])
async def test_a_refused_request_gets_no_100_and_uploads_nothing(gateway: Gateway, method: str, path: str, who: str,
                                                                  status: int) -> None:
    """Before: the 100 went out before authentication and admission, so a refused client uploaded
    its whole body for nothing. Now its final answer comes first, and the connection closes (the
    client sends no body, so none is waited for)."""
    keys = {"alice": await gateway.create_key("alice"), "nobody": "sk_live_" + "A" * 43}
    holder = None
    if who == "busy":  # at its concurrency cap: one request admitted, waiting for its body
        keys[who] = await gateway.create_key("busy", max_concurrent=1)
        holder = await asyncio.open_connection(*gateway.url.removeprefix("http://").split(":"))
        holder[1].write(request_bytes("POST", path, {"x-api-key": keys[who], "Content-Length": "1000"},
                                      content_length=False))
        await holder[1].drain()
        await asyncio.sleep(0.2)  # admitted, its slot taken
    host, port = gateway.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request_bytes(method, path, {"x-api-key": keys[who], "Expect": "100-continue",
                                                  "content-type": "application/json", "Content-Length": "5000000"},
                                   content_length=False))
        async with asyncio.timeout(5):
            answer = await reader.read()  # all of it, up to the close
    finally:
        writer.close()
        if holder is not None:
            holder[1].close()
            await holder[1].wait_closed()
        await writer.wait_closed()
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:300]
    assert b"100 Continue" not in answer


@pytest.mark.parametrize("method, path, status", [
    ("DELETE", MESSAGES, 405),
    ("PUT", "/v1/messages/count_tokens", 405),
    ("OPTIONS", MESSAGES, 405),
    ("GET", CHAT, 405),
    ("PATCH", RESPONSES, 405),
    ("GET", "/v1/messages/batches", 404),
    ("POST", CHAT + "/extra", 404),
    ("POST", RESPONSES + "/resp_1/cancel", 404),
    ("GET", "/v1", 404),
    ("POST", "/", 405),
    ("TRACE", "/", 405),
    ("GET", "/.env", 404),
    ("GET", "/admin", 404),
    ("CONNECT", "antex.test:443", 404),
])
async def test_unknown_routes_and_methods_answer_in_the_doors_shape(gateway: Gateway, method: str, path: str,
                                                                    status: int) -> None:
    answer = await exchange(gateway.url, request_bytes(method, path))
    assert answer.status == status
    assert error_type(path, answer.status, answer.body) == "not_found_error"  # 405 too, as Anthropic names it


@pytest.mark.parametrize("path", [
    "/static/../antex/config.py", "/static/../../etc/passwd", "/static/%2e%2e/auth.py", "/static/%2e%2e%2fauth.py",
    "/static/..%2f..%2fantex%2fconfig.py", "/static/..%5c..%5cauth.py", "/static/..\\..\\auth.py",
    "//static/app.js", "/static//app.js", "/static/./app.js/", "/static/app.js%00.html", "/static/%00",
    "/static/%zz", "/static/index.html", "/static/../static/../schema.sql", "/%2e%2e/antex/auth.py",
    "/static/AAAAAAAAAAAA/../../auth.py", "/static/" + "a" * 5000,
])
async def test_dashboard_paths_cannot_escape_the_static_files(gateway: Gateway, path: str) -> None:
    answer = await exchange(gateway.url, request_bytes("GET", path))
    assert answer.status in (400, 404), (path, answer.status)
    for leaked in (b"import ", b"def ", b"root:", b"CREATE TABLE", b"<!doctype"):
        assert leaked not in answer.body, (path, leaked)
    if answer.headers.get("content-type", "").startswith("text/plain"):  # the dashboard's own 404
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


# property-based: random bodies and headers against a real `antex serve`


LIVE_UPSTREAM_KEY = "sk-ant-live-upstream-key-that-must-never-leave-0123456789"


@dataclass
class Live:
    url: str
    key: str
    log: Path

    def send(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        host, port = self.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=15)
        try:
            connection.putrequest("POST", path, skip_accept_encoding=True)
            for name, value in headers.items():
                connection.putheader(name, value.encode("latin-1"))
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def check_log(self) -> None:
        """The server's own output: no traceback, no client key, no upstream key."""
        text = self.log.read_text(errors="replace")
        assert "Traceback" not in text and "Error handling request" not in text, text[-3000:]
        assert self.key not in text and LIVE_UPSTREAM_KEY not in text


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    work = tmp_path_factory.mktemp("hostile")
    procs: list[subprocess.Popen] = []
    try:
        config, port = live_config(work, start_fake_upstream(work, LIVE_UPSTREAM_KEY, procs), "max_body_bytes = 262144\n")
        key = cli_key(config, "fuzz")
        server_log = work / "server.log"
        start_antex(config, LIVE_UPSTREAM_KEY, server_log, procs)
        live = Live(f"http://127.0.0.1:{port}", key, server_log)
        for _ in range(100):  # listening is logged just before the socket accepts
            try:
                if live.send(MESSAGES, orjson.dumps(VALID[MESSAGES]), {"x-api-key": key})[0] == 200:
                    break
            except ConnectionError:
                pass
            time.sleep(0.05)
        yield live
    finally:
        for proc in reversed(procs):
            stop(proc)


def check_answer(live: Live, path: str, status: int, headers: dict[str, str], body: bytes) -> None:
    assert status < 500, (status, body[:500])
    if status >= 400:
        assert headers.get("content-type", "").startswith("application/json"), (status, headers, body[:300])
        error_type(path, status, body)
    assert live.key.encode() not in body and LIVE_UPSTREAM_KEY.encode() not in body
    assert not any(LIVE_UPSTREAM_KEY in value or live.key in value for value in headers.values())


JSON_LEAVES = (st.none() | st.booleans() | st.integers(min_value=-2**63, max_value=2**64 - 1)
               | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
               | st.sampled_from(["claude-sonnet-4-6", "claude-haiku-4-5", "user", "assistant", "tool", "system",
                                  "function", "text", "message", "auto", "required", "json_schema", "high", ""]))
JSON = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8) | st.sampled_from(["type", "role", "content", "name", "text",
                                                                             "function", "arguments", "input"]),
                                      inner, max_size=4), max_leaves=16)
FIELDS = ["model", "messages", "max_tokens", "stream", "system", "tools", "tool_choice", "stream_options",
          "max_completion_tokens", "max_output_tokens", "input", "instructions", "temperature", "top_p", "stop",
          "user", "response_format", "reasoning_effort", "reasoning", "text", "n", "metadata", "thinking",
          "previous_response_id", "parallel_tool_calls"]
RICH = {
    CHAT: chat(stream=True, stream_options={"include_usage": True}, tools=[
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        tool_choice={"type": "function", "function": {"name": "f"}}, stop=["END"], response_format={"type": "text"},
        messages=[{"role": "system", "content": "be brief"},
                  {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                  {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "ok"}]),
    RESPONSES: responses(stream=True, instructions="be brief", reasoning={"effort": "low"}, tools=[
        {"type": "function", "name": "shell", "parameters": {"type": "object"}},
        {"type": "custom", "name": "apply_patch", "format": {"type": "grammar", "definition": "start"}}],
        input=[{"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
               {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": "{}"},
               {"type": "function_call_output", "call_id": "c1", "output": "done"}]),
    MESSAGES: sample_body(stream=True, system="be brief", messages=[
        {"role": "user", "content": [{"type": "text", "text": "hi"}]}]),
}


def _paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for name, child in children:
        yield from _paths(child, (*prefix, name))


@st.composite
def hostile_bodies(draw: st.DrawFn, path: str) -> bytes:
    """Arbitrary JSON, known fields with arbitrary values, or a rich valid request with parts replaced."""
    kind = draw(st.sampled_from(["any json", "known fields", "mutated", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "any json":
        return orjson.dumps(draw(JSON))
    if kind == "known fields":
        return orjson.dumps(draw(st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6)))
    body = copy.deepcopy(RICH[path])
    places = list(_paths(body))[1:]
    for _ in range(draw(st.integers(1, 3))):
        *parents, last = draw(st.sampled_from(places))
        target = body
        try:
            for name in parents:
                target = target[name]
            if isinstance(target, dict) and not isinstance(last, str):  # a list's place, now a dict's
                continue
            target[last] = draw(JSON)
        except (KeyError, IndexError, TypeError):  # an earlier replacement removed this place
            pass
    return orjson.dumps(body)


@SETTINGS
@given(data=st.data())
def test_random_bodies_get_an_answer_or_a_clean_4xx(live: Live, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(DOORS + ("/v1/messages/count_tokens",)), label="path")
    door = MESSAGES if path.startswith(MESSAGES) else path
    body = data.draw(hostile_bodies(door), label="body")
    status, headers, answer = live.send(path, body, {"x-api-key": live.key, "content-type": "application/json"})
    check_answer(live, path, status, headers, answer)


HEADER_NAMES = st.sampled_from([
    "x-api-key", "authorization", "anthropic-version", "anthropic-beta", "content-type", "accept", "accept-encoding",
    "content-encoding", "x-forwarded-for", "forwarded", "x-real-ip", "cookie", "origin", "referer", "user-agent",
    "if-none-match", "range", "expect", "te", "upgrade", "proxy-authorization", "keep-alive", "x-stainless-retry-count",
    "idempotency-key", "x-request-id", "request-id", "anthropic-dangerous-direct-browser-access",
]) | st.from_regex(r"[A-Za-z][A-Za-z0-9\-_.!#$%&'*+^`|~]{0,24}", fullmatch=True)
HEADER_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40).map(
    str.strip) | st.sampled_from([
        "gzip", "deflate, br", "identity", "chunked", "100-continue", "close", "websocket", "h2c", "Bearer ", "Basic x",
        "sk_live_", "sk_live_" + "A" * 43, "text/event-stream", "application/x-www-form-urlencoded", "*/*",
        "2023-06-01", "bytes=0-10", "for=unknown", "127.0.0.1, 10.0.0.1", "null", "0", "-1", "99999999999999999999"])


@SETTINGS
@given(data=st.data())
def test_random_headers_get_an_answer_or_a_clean_4xx(live: Live, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(DOORS), label="path")
    headers = {"x-api-key": live.key, "content-type": "application/json"}
    headers.update(data.draw(st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=6), label="headers"))
    if data.draw(st.booleans(), label="keep the real key"):  # else a random x-api-key may replace it
        headers["x-api-key"] = live.key
    body = orjson.dumps(VALID[path] if data.draw(st.booleans(), label="plain body") else RICH[path])
    status, answer_headers, answer = live.send(path, body, headers)
    check_answer(live, path, status, answer_headers, answer)


def test_the_live_server_is_unharmed_and_logged_nothing_it_should_not(live: Live) -> None:
    for path in DOORS:
        status, headers, body = live.send(path, orjson.dumps(VALID[path]), {"x-api-key": live.key})
        assert status == 200, body[:300]
    live.check_log()
