"""antex.translate.responses_stream: Anthropic SSE events -> Responses API SSE events.

Fed the frames the fake upstream really sends (tests/fake_replies.py); every event is checked
against the openai SDK's stream event models, and the items Codex acts on (output_item.done,
response.completed / .failed) against what a non-streaming call and Codex's next request need.
"""

from __future__ import annotations

import re

from typing import Any

import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from antex.translate.responses import ResponsesStream, messages_to_response
from tests.fake_replies import Reply, text_reply, thinking_reply
from tests.test_translate_chat import MODEL, sdk_client, upstream_events
from tests.test_translate_responses import CUSTOM, PATCH, codex_body, text_item, translate

pytestmark = pytest.mark.usefixtures("timeless_ids")

STREAM_EVENT = TypeAdapter(ResponseStreamEvent)
MIXED_REPLY = Reply(content=(
    {"type": "thinking", "thinking": "Add the file, then list.", "signature": "EqSig=="},
    {"type": "text", "text": "Adding the file."},
    {"type": "tool_use", "id": "toolu_a", "name": "apply_patch", "input": {"input": PATCH}},
    {"type": "tool_use", "id": "toolu_b", "name": "shell", "input": {"command": ["ls", "-la"]}},
), stop_reason="tool_use", cache_read=100)


def run_stream(events: list[tuple[str, dict]]) -> list[dict]:
    stream = ResponsesStream(request=codex_body(), custom_tools=CUSTOM, created=1700000000)
    return parse_frames(b"".join(stream.event(name, data) for name, data in events) + stream.close())


def parse_frames(raw: bytes, *, first_sequence: int = 0) -> list[dict[str, Any]]:
    events = []
    for frame in raw.split(b"\n\n")[:-1]:
        event_line, data_line = frame.split(b"\n")
        event = orjson.loads(data_line.removeprefix(b"data: "))
        assert event_line == b"event: " + event["type"].encode()
        events.append(event)
    sequence = [event["sequence_number"] for event in events]
    assert sequence == list(range(first_sequence, first_sequence + len(events)))
    return events


def validated(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for event in events:
        STREAM_EVENT.validate_python(event)
    return events


def of_type(events: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == event_type]


def test_stream_lifecycle_and_items() -> None:
    events = validated(run_stream(upstream_events(MIXED_REPLY)))
    assert [event["type"] for event in events[:2]] == ["response.created", "response.in_progress"]
    stem = events[0]["response"]["id"].removeprefix("resp_")
    assert re.fullmatch(r"[0-9a-f]{11}01Test", stem) and events[0]["response"]["output"] == []
    completed = events[-1]
    assert completed["type"] == "response.completed"
    Response.model_validate(completed["response"])
    done = [event["item"] for event in of_type(events, "response.output_item.done")]
    assert completed["response"]["output"] == done
    assert [item["type"] for item in done] == ["reasoning", "message", "custom_tool_call", "function_call"]
    added = of_type(events, "response.output_item.added")
    assert [event["output_index"] for event in added] == [0, 1, 2, 3]
    assert [event["item"]["id"] for event in added] == [item["id"] for item in done]
    usage = completed["response"]["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (110, 12)
    assert usage["input_tokens_details"]["cached_tokens"] == 100


def test_stream_items_equal_non_stream_items() -> None:
    """Codex acts on output_item.done: it must get what a non-streaming call would return."""
    streamed = run_stream(upstream_events(MIXED_REPLY, message_id="msg_01Same"))[-1]["response"]["output"]
    message = orjson.loads(MIXED_REPLY.message("msg_01Same", MODEL, 10))
    response = messages_to_response(message, request=codex_body(), custom_tools=CUSTOM, created=1)
    assert response["output"] == streamed


def test_stream_deltas() -> None:
    events = validated(run_stream(upstream_events(MIXED_REPLY)))
    stem = events[0]["response"]["id"].removeprefix("resp_")
    summary = "".join(event["delta"] for event in of_type(events, "response.reasoning_summary_text.delta"))
    assert summary == "Add the file, then list."
    text_deltas = of_type(events, "response.output_text.delta")
    assert "".join(event["delta"] for event in text_deltas) == "Adding the file."
    arguments = of_type(events, "response.function_call_arguments.delta")
    assert len(arguments) == 4 and {event["item_id"] for event in arguments} == {f"fc_{stem}_3"}
    assert orjson.loads("".join(event["delta"] for event in arguments)) == {"command": ["ls", "-la"]}
    (arguments_done,) = of_type(events, "response.function_call_arguments.done")
    assert arguments_done["arguments"] == '{"command":["ls","-la"]}'
    patch_deltas = of_type(events, "response.custom_tool_call_input.delta")
    assert len(patch_deltas) > 1, "the raw input streams, unwrapped from its JSON"
    assert "".join(event["delta"] for event in patch_deltas) == PATCH
    assert {event["item_id"] for event in patch_deltas} == {f"ctc_{stem}_2"}
    assert of_type(events, "response.custom_tool_call_input.done")[0]["input"] == PATCH
    assert of_type(events, "response.content_part.done")[0]["part"]["text"] == "Adding the file."


def test_codex_round_trip_keeps_thinking_and_call_ids() -> None:
    """Items from one turn, replayed with their outputs, give Anthropic a valid thinking tool loop."""
    done = run_stream(upstream_events(MIXED_REPLY))[-1]["response"]["output"]
    outputs = [{"type": "custom_tool_call_output", "call_id": "toolu_a", "output": "Success."},
               {"type": "function_call_output", "call_id": "toolu_b", "output": "hello.txt"}]
    body = translate(input=[text_item("user", "Add hello.txt"), *done, *outputs],
                     reasoning={"effort": "medium"})
    assistant, results = body["messages"][-2:]
    assert assistant["content"][0] == {
        "type": "thinking", "thinking": "Add the file, then list.", "signature": "EqSig=="}
    assert [block["type"] for block in assistant["content"]] == ["thinking", "text", "tool_use", "tool_use"]
    assert assistant["content"][2]["input"] == {"input": PATCH}
    assert [block["tool_use_id"] for block in results["content"]] == ["toolu_a", "toolu_b"]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4096}


def test_max_tokens_stream_is_incomplete() -> None:
    events = validated(run_stream(upstream_events(text_reply("Cut", stop_reason="max_tokens"))))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["status"] == "incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


@pytest.mark.parametrize("error_type, message, code", [
    ("overloaded_error", "Overloaded", "server_error"),
    ("api_error", "Internal server error", "server_error"),
    ("rate_limit_error", "Please try again in 20s.", "rate_limit_exceeded"),
    ("invalid_request_error", "prompt is too long: 210000 tokens > 200000", "context_length_exceeded"),
    ("invalid_request_error", "messages.1: bad", "invalid_prompt"),
])
def test_error_event_fails_the_response(error_type: str, message: str, code: str) -> None:
    events = upstream_events(thinking_reply("Think.", "Answer."))[:10]
    events.append(("error", {"type": "error", "error": {"type": error_type, "message": message}}))
    stream = ResponsesStream(request=codex_body(), custom_tools=CUSTOM, created=1)
    frames = parse_frames(b"".join(stream.event(name, data) for name, data in events))
    failed = frames[-1]
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": code, "message": message}
    assert [item["type"] for item in failed["response"]["output"]] == ["reasoning"]
    if code != "context_length_exceeded":  # a code Codex knows that the SDK's enum lacks
        validated(frames)
    assert stream.close() == b"" and stream.event("message_stop", {}) == b""


def test_cut_stream_then_fail() -> None:
    stream = ResponsesStream(request=codex_body(), custom_tools=CUSTOM, created=1)
    sent = b"".join(stream.event(name, data) for name, data in upstream_events(MIXED_REPLY)[:12])
    failed = stream.fail("api_error", "Upstream connection lost.")
    failed = validated(parse_frames(failed, first_sequence=len(parse_frames(sent))))
    assert [event["type"] for event in failed] == ["response.failed"]
    assert [item["type"] for item in failed[0]["response"]["output"]] == ["reasoning", "message"]
    assert failed[0]["response"]["error"] == {"code": "server_error", "message": "Upstream connection lost."}


def test_fail_before_anything_still_creates_the_response() -> None:
    stream = ResponsesStream(request=codex_body(), custom_tools=CUSTOM, created=1)
    events = validated(parse_frames(stream.fail("overloaded_error", "Overloaded")))
    assert [event["type"] for event in events] == [
        "response.created", "response.in_progress", "response.failed"]


def test_close_before_message_stop_fails() -> None:
    events = run_stream(upstream_events(text_reply("Hello"))[:-1])
    assert events[-1]["type"] == "response.failed"


def test_openai_sdk_reads_the_stream() -> None:
    stream = ResponsesStream(request=codex_body(), custom_tools=CUSTOM, created=1)
    raw = b"".join(stream.event(name, data) for name, data in upstream_events(MIXED_REPLY)) + stream.close()
    with sdk_client(raw) as client:
        events = list(client.responses.create(model=MODEL, input="hi", stream=True))
    assert events[-1].type == "response.completed"
    assert [item.type for item in events[-1].response.output] == [
        "reasoning", "message", "custom_tool_call", "function_call"]
    assert events[-1].response.output_text == "Adding the file."


TRICKY_TEXTS = ["plain", 'quotes " and \\ backslash', "new\nline\ttab", "ünïcødé ✓ 日本", "\u2028\u2029 \x00", ""]


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_the_prepared_text_delta_frame_is_the_generic_frame(text: str) -> None:
    """output_text.delta is built from prepared bytes (the hot path); it must be byte for byte what
    the generic frame builder makes, sequence number included."""
    fast = ResponsesStream(request=codex_body(), custom_tools=CUSTOM, created=1700000000)
    generic = ResponsesStream(request=codex_body(), custom_tools=CUSTOM, created=1700000000)
    for stream in (fast, generic):
        stream.event("message_start", {"message": {"id": "msg_01x", "usage": {"input_tokens": 3}}})
        stream.event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    for _ in range(2):  # the second frame reuses the prepared bytes
        item = generic._open[0]
        expected = generic._item_frame("response.output_text.delta", item, content_index=0, delta=text, logprobs=[])
        assert fast._output_text_deltas(fast._open[0], [orjson.dumps(text)]) == expected


def test_a_stream_without_message_start_still_gets_an_id() -> None:
    stream = ResponsesStream(request=codex_body(), custom_tools=CUSTOM, created=1700000000)
    events = parse_frames(stream.event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
                          + stream.close())
    item_id = events[0]["item"]["id"]
    assert item_id.startswith("msg_") and len(item_id) > len("msg__0")
    assert events[-1]["response"]["id"] == "resp_" + item_id.removeprefix("msg_").rsplit("_", 1)[0]
