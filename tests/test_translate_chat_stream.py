"""antex.translate.chat_stream: Anthropic SSE events -> chat.completion.chunk frames.

Fed the frames the fake upstream really sends (tests/fake_replies.py); every chunk is checked
against the openai SDK's model, and whole streams are read by the SDK's own stream reader.
"""

from __future__ import annotations

from typing import Any

import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionChunk

from antex.translate.chat import ChatStream
from tests.fake_replies import Reply, text_reply, thinking_reply, tool_use_reply
from tests.test_translate_chat import MODEL, sdk_client, upstream_events, user


def run_stream(events: list[tuple[str, dict]], *, include_usage: bool = True, close: bool = True) -> bytes:
    stream = ChatStream(model=MODEL, created=1700000000, include_usage=include_usage)
    return b"".join(stream.event(name, data) for name, data in events) + (stream.close() if close else b"")


def data_lines(raw: bytes) -> list[Any]:
    assert raw.endswith(b"\n\n")
    lines = [frame.removeprefix(b"data: ") for frame in raw.split(b"\n\n") if frame]
    return [line.decode() if line == b"[DONE]" else orjson.loads(line) for line in lines]


def chunks_of(raw: bytes) -> list[dict[str, Any]]:
    items = data_lines(raw)
    assert items[-1] == "[DONE]"
    for chunk in items[:-1]:
        ChatCompletionChunk.model_validate(chunk)
    assert len({chunk["id"] for chunk in items[:-1]}) == 1
    return items[:-1]


def deltas(chunks: list[dict[str, Any]], key: str) -> list[Any]:
    return [c["choices"][0]["delta"][key] for c in chunks if c["choices"] and key in c["choices"][0]["delta"]]


def test_text_stream() -> None:
    chunks = chunks_of(run_stream(upstream_events(text_reply("Hello there, world", events=3))))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["id"] == "chatcmpl-01Test"
    assert "".join(deltas(chunks, "content")) == "Hello there, world"
    assert len(deltas(chunks, "content")) == 4  # the empty opener and three pieces
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 12


def test_usage_is_cumulative_not_summed() -> None:
    reply = text_reply("Hi", output_tokens=40, cache_read=500, cache_write_5m=30)
    usage = chunks_of(run_stream(upstream_events(reply, input_tokens=9)))[-1]["usage"]
    assert usage == {"prompt_tokens": 539, "completion_tokens": 40, "total_tokens": 579,
                     "prompt_tokens_details": {"cached_tokens": 500, "cache_write_tokens": 30}}


def test_no_usage_chunk_unless_asked() -> None:
    chunks = chunks_of(run_stream(upstream_events(text_reply("Hi")), include_usage=False))
    assert all(chunk["choices"] for chunk in chunks)
    assert "usage" not in chunks[-1]


def test_tool_call_stream() -> None:
    reply = tool_use_reply("get_weather", {"city": "Paris", "days": 3}, text="Let me check.")
    chunks = chunks_of(run_stream(upstream_events(reply)))
    calls = deltas(chunks, "tool_calls")
    first = calls[0][0]
    assert first == {"index": 0, "id": "toolu_01FakeUpstreamToolUse", "type": "function",
                     "function": {"name": "get_weather", "arguments": ""}}
    pieces = [call[0]["function"]["arguments"] for call in calls[1:]]
    assert len(pieces) == 4 and all(call[0]["index"] == 0 and "id" not in call[0] for call in calls[1:])
    assert orjson.loads("".join(pieces)) == {"city": "Paris", "days": 3}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_call_without_input_gets_empty_object() -> None:
    events = upstream_events(tool_use_reply("list_files", {}))
    events = [(name, data) for name, data in events
              if not (name == "content_block_delta" and data["delta"].get("partial_json") in ("", "{}"))]
    chunks = chunks_of(run_stream(events))
    arguments = [call[0]["function"]["arguments"] for call in deltas(chunks, "tool_calls")]
    assert "".join(arguments) == "{}"


def test_two_tool_calls_get_two_indexes() -> None:
    reply = Reply(content=(
        {"type": "tool_use", "id": "toolu_a", "name": "f", "input": {"x": 1}},
        {"type": "tool_use", "id": "toolu_b", "name": "g", "input": {"y": 2}},
    ), stop_reason="tool_use")
    chunks = chunks_of(run_stream(upstream_events(reply)))
    starts = [call[0] for call in deltas(chunks, "tool_calls") if "id" in call[0]]
    assert [(start["index"], start["id"]) for start in starts] == [(0, "toolu_a"), (1, "toolu_b")]


def test_thinking_stream() -> None:
    chunks = chunks_of(run_stream(upstream_events(thinking_reply("Consider the weather.", "Sunny."))))
    assert "".join(deltas(chunks, "reasoning_content")) == "Consider the weather."
    assert "".join(deltas(chunks, "content")) == "Sunny."


def test_error_event_mid_stream() -> None:
    events = upstream_events(text_reply("Hello", events=2))[:4]
    error = {"type": "overloaded_error", "message": "Overloaded"}
    events.append(("error", {"type": "error", "error": error}))
    stream = ChatStream(model=MODEL, created=1, include_usage=True)
    raw = b"".join(stream.event(name, data) for name, data in events)
    items = data_lines(raw)
    assert items[-1] == {
        "error": {"message": "Overloaded", "type": "overloaded_error", "code": "overloaded_error"}}
    assert stream.event("message_stop", {"type": "message_stop"}) == b""
    assert stream.close() == b""


def test_cut_stream_then_fail() -> None:
    stream = ChatStream(model=MODEL, created=1, include_usage=True)
    for name, data in upstream_events(tool_use_reply("f", {"a": 1}))[:5]:
        stream.event(name, data)
    items = data_lines(stream.fail("api_error", "Upstream connection lost."))
    assert items == [
        {"error": {"message": "Upstream connection lost.", "type": "api_error", "code": "api_error"}}]
    assert stream.fail("api_error", "again") == b""


def test_close_before_message_stop_fails() -> None:
    raw = run_stream(upstream_events(text_reply("Hello"))[:-2])
    assert "error" in data_lines(raw)[-1]
    assert b"[DONE]" not in raw


def test_openai_sdk_reads_the_stream() -> None:
    raw = run_stream(upstream_events(tool_use_reply("get_weather", {"city": "Paris"}, text="Checking.")))
    with sdk_client(raw) as client:
        chunks = list(client.chat.completions.create(
            model=MODEL, messages=[user("hi")], stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Checking."
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12


def test_openai_sdk_raises_on_failure() -> None:
    stream = ChatStream(model=MODEL, created=1, include_usage=False)
    raw = b"".join(stream.event(name, data) for name, data in upstream_events(text_reply("Hello"))[:3])
    raw += stream.fail("overloaded_error", "Overloaded")
    with sdk_client(raw) as client, pytest.raises(openai.APIError, match="Overloaded"):
        list(client.chat.completions.create(model=MODEL, messages=[user("hi")], stream=True))


@pytest.mark.parametrize("text", ["plain", 'quotes " and \\ backslash', "new\nline", "ünïcødé ✓", "\u2028 \x00", ""])
def test_the_prepared_text_chunk_is_the_generic_chunk(text: str) -> None:
    """Text chunks are built from prepared bytes (the hot path): byte for byte the generic chunk."""
    stream = ChatStream(model=MODEL, created=1700000000, include_usage=False)
    stream.event("message_start", {"message": {"id": "msg_01x", "usage": {"input_tokens": 3}}})
    for _ in range(2):
        assert stream._text(orjson.dumps(text)) == stream._chunk({"content": text})
