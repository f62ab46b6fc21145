"""antex.translate.chat: Chat Completions requests -> Messages, messages -> chat.completion.

No server. Also home of the helpers the other translate tests share: the fake upstream's real
stream frames as (event, data) pairs, and an openai SDK client that reads given bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx2
import openai
import orjson
import pytest
from anthropic.types.message_create_params import MessageCreateParamsStreaming
from openai.types.chat import ChatCompletion
from pydantic import TypeAdapter

from antex.translate import TranslationError
from antex.translate.chat import chat_to_messages, messages_to_chat
from antex.translate.request import JSON_OBJECT_INSTRUCTION
from tests.fake_replies import Reply

ANTHROPIC_REQUEST = TypeAdapter(MessageCreateParamsStreaming)
MODEL = "claude-sonnet-4-6"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
PDF = "JVBERi0xLjQK"
SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}},
    "required": ["n"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def upstream_events(
    reply: Reply, *, message_id: str = "msg_01Test", input_tokens: int = 10
) -> list[tuple[str, dict]]:
    """(event name, data) pairs of the fake upstream's stream for `reply`, as a route reads them."""
    events = []
    for frame in reply.stream(message_id, MODEL, input_tokens):
        event_line, data_line = frame.decode().strip().split("\n")
        events.append((event_line.removeprefix("event: "), orjson.loads(data_line.removeprefix("data: "))))
    return events


def anthropic_checked(body: dict[str, Any]) -> dict[str, Any]:
    """`body`, once the anthropic SDK's request types accept it (nested lists validate lazily,
    so they are walked)."""

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, Iterable) and not isinstance(value, str | bytes):
            for item in value:
                walk(item)

    walk(ANTHROPIC_REQUEST.validate_python({**body, "stream": True}))
    return body


def translate(**fields: Any) -> dict[str, Any]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}
    return chat_to_messages(body, default_max_tokens=4096, thinking_supported=True)


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


TOOL_LOOP = [
    user("Weather in Paris and Rome?"),
    {"role": "assistant", "content": "Checking.", "tool_calls": [
        call("call_1", "get_weather", '{"city": "Paris"}'),
        call("call_2", "get_weather", '{"city": "Rome"}'),
    ]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    user("and be brief"),
    {"role": "tool", "tool_call_id": "call_2", "content": [text("21C")]},
]

REQUEST_CASES = {
    "system and developer hoisted": (
        {"messages": [{"role": "system", "content": "Be terse."}, user("hi"),
                      {"role": "developer", "content": [text("Use French.")]}]},
        {"system": "Be terse.\n\nUse French.", "messages": [{"role": "user", "content": [text("hi")]}]},
    ),
    "images by data URL and http URL": (
        {"messages": [user([
            text("Compare"),
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        ])]},
        {"messages": [{"role": "user", "content": [
            text("Compare"),
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        ]}]},
    ),
    "jpg alias and PDF file": (
        {"messages": [user([
            {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/4A=="}},
            {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}"}},
        ])]},
        {"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4A=="}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}},
        ]}]},
    ),
    "tool round trip, results first in the user turn": (
        {"messages": TOOL_LOOP, "tools": [WEATHER_TOOL]},
        {"messages": [
            {"role": "user", "content": [text("Weather in Paris and Rome?")]},
            {"role": "assistant", "content": [
                text("Checking."),
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": [text("21C")]},
                text("and be brief"),
            ]},
        ], "tools": [{"name": "get_weather", "description": "Current weather", "input_schema": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]},
    ),
    "consecutive same-role turns merged, empty text dropped": (
        {"messages": [user("a"), user(""), user("b"), {"role": "assistant", "content": "c"},
                      {"role": "assistant", "content": [text("d")]}, user("e")]},
        {"messages": [
            {"role": "user", "content": [text("a"), text("b")]},
            {"role": "assistant", "content": [text("c"), text("d")]},
            {"role": "user", "content": [text("e")]},
        ]},
    ),
    "unsafe call ids mapped the same on both sides": (
        {"messages": [
            user("x"),
            {"role": "assistant", "content": None, "tool_calls": [call("call.1:a", "f", "")]},
            {"role": "tool", "tool_call_id": "call.1:a", "content": "ok"}]},
        {"messages": [
            {"role": "user", "content": [text("x")]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1_a", "name": "f", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1_a", "content": "ok"}]},
        ]},
    ),
    "stop string": ({"stop": "END"}, {"stop_sequences": ["END"]}),
    "stop list": ({"stop": ["a", "b"]}, {"stop_sequences": ["a", "b"]}),
    "temperature clamped high": ({"temperature": 1.7}, {"temperature": 1.0}),
    "temperature clamped low": ({"temperature": -0.5}, {"temperature": 0.0}),
    "temperature wins over top_p": ({"temperature": 0.2, "top_p": 0.9}, {"temperature": 0.2}),
    "top_p alone": ({"top_p": 0.9}, {"top_p": 0.9}),
    "max_completion_tokens first": ({"max_completion_tokens": 300, "max_tokens": 100}, {"max_tokens": 300}),
    "max_tokens": ({"max_tokens": 100}, {"max_tokens": 100}),
    "default max_tokens": ({}, {"max_tokens": 4096}),
    "user as metadata": ({"user": "alice"}, {"metadata": {"user_id": "alice"}}),
    "stream only, options dropped": (
        {"stream": True, "stream_options": {"include_usage": True}}, {"stream": True}),
    "required tool choice": (
        {"tools": [WEATHER_TOOL], "tool_choice": "required"}, {"tool_choice": {"type": "any"}}),
    "named tool choice": (
        {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        {"tool_choice": {"type": "tool", "name": "get_weather"}},
    ),
    "no tools": ({"tools": [WEATHER_TOOL], "tool_choice": "none"}, {"tool_choice": {"type": "none"}}),
    "no parallel calls": (
        {"tools": [WEATHER_TOOL], "parallel_tool_calls": False},
        {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
    ),
    "json schema as native structured output": (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}},
        {"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}},
    ),
    "json object as an instruction": (
        {"messages": [{"role": "system", "content": "Be terse."}, user("hi")],
         "response_format": {"type": "json_object"}},
        {"system": f"Be terse.\n\n{JSON_OBJECT_INSTRUCTION}"},
    ),
    "reasoning effort as thinking, sampling dropped": (
        {"reasoning_effort": "medium", "temperature": 0.5, "max_tokens": 20000},
        {"thinking": {"type": "enabled", "budget_tokens": 8192}, "max_tokens": 20000},
    ),
    "thinking budget at most half of max_tokens": (
        {"reasoning_effort": "high", "max_tokens": 5000},
        {"thinking": {"type": "enabled", "budget_tokens": 2500}},
    ),
}


@pytest.mark.parametrize("fields, expected", REQUEST_CASES.values(), ids=REQUEST_CASES.keys())
def test_request_translation(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    body = anthropic_checked(translate(**fields))
    assert {key: body.get(key) for key in expected} == expected
    assert body["model"] == MODEL
    assert body["cache_control"] == {"type": "ephemeral"}


ABSENT_CASES = {
    "no thinking without model support": ({"reasoning_effort": "high"}, False, ["thinking"]),
    "no thinking for effort none": ({"reasoning_effort": "none", "temperature": 0.3}, True, ["thinking"]),
    "no thinking when max_tokens leaves no budget": (
        {"reasoning_effort": "low", "max_tokens": 2047}, True, ["thinking"]),
    "no thinking with a forced tool": (
        {"reasoning_effort": "low", "tools": [WEATHER_TOOL], "tool_choice": "required"}, True, ["thinking"]),
    "no thinking mid tool loop without thinking blocks": (
        {"reasoning_effort": "low", "messages": TOOL_LOOP, "tools": [WEATHER_TOOL]}, True, ["thinking"]),
    "sampling dropped with thinking": ({"reasoning_effort": "low", "temperature": 0.3, "top_p": 0.5}, True,
                                       ["temperature", "top_p"]),
    "top_p dropped beside temperature": ({"temperature": 0.2, "top_p": 0.9}, True, ["top_p"]),
    "unknown fields ignored": ({"seed": 7, "logit_bias": {"1": 2}, "n": 1, "stream_options": {}}, True,
                               ["seed", "logit_bias", "n", "stream_options"]),
    "text format is the default": ({"response_format": {"type": "text"}}, True, ["output_config", "system"]),
    "tool choice needs tools": ({"tool_choice": "none"}, True, ["tool_choice", "tools"]),
}


@pytest.mark.parametrize("fields, supported, absent", ABSENT_CASES.values(), ids=ABSENT_CASES.keys())
def test_request_fields_left_out(fields: dict[str, Any], supported: bool, absent: list[str]) -> None:
    body = {"model": MODEL, "messages": [user("hi")], **fields}
    translated = chat_to_messages(body, default_max_tokens=4096, thinking_supported=supported)
    assert [key for key in absent if key in translated] == []


ERROR_CASES = {
    "messages missing": ({"messages": None}, "messages"),
    "messages not a list": ({"messages": {"role": "user"}}, "messages"),
    "only system messages": ({"messages": [{"role": "system", "content": "x"}]}, "messages"),
    "message not an object": ({"messages": ["hi"]}, "messages[0]"),
    "unknown role": ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    "n above 1": ({"n": 2}, "n"),
    "model missing": ({"model": None}, "model"),
    "bad arguments JSON": (
        {"messages": [user("x"), {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{city: Paris"}}]}]},
        "messages[1].tool_calls[0].function.arguments",
    ),
    "arguments not an object": (
        {"messages": [user("x"), {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]},
        "messages[1].tool_calls[0].function.arguments",
    ),
    "tool result without call id": (
        {"messages": [user("x"), {"role": "tool", "content": "ok"}]}, "messages[1].tool_call_id"),
    "image by ftp": ({"messages": [user([image("ftp://x/y.png")])]}, "messages[0].content[0].image_url.url"),
    "image type refused": (
        {"messages": [user([image("data:image/bmp;base64,Qk0=")])]}, "messages[0].content[0].image_url.url"),
    "data URL not base64": (
        {"messages": [user([image("data:image/png,raw")])]}, "messages[0].content[0].image_url.url"),
    "audio part": (
        {"messages": [user([{"type": "input_audio", "input_audio": {}}])]}, "messages[0].content[0].type"),
    "image in system": (
        {"messages": [{"role": "system", "content": [image("https://x/y.png")]}, user("x")]},
        "messages[0].content"),
    "non-function tool": ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
    "tool without name": (
        {"tools": [{"type": "function", "function": {"parameters": {}}}]}, "tools[0].function.name"),
    "bad tool choice": ({"tool_choice": "sometimes"}, "tool_choice"),
    "bad stop": ({"stop": 5}, "stop"),
    "zero max_tokens": ({"max_tokens": 0}, "max_tokens"),
    "temperature not a number": ({"temperature": "hot"}, "temperature"),
    "unknown reasoning effort": ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    "bad response format": ({"response_format": {"type": "yaml"}}, "response_format"),
    "json schema without schema": ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
                                   "response_format.json_schema.schema"),
}


@pytest.mark.parametrize("fields, param", ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_request_errors(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as error:
        translate(**fields)
    assert error.value.param == param
    assert error.value.message


# ---- non-streaming responses ----------------------------------------------------------------


def anthropic_message(content: list[dict[str, Any]], stop_reason: str = "end_turn") -> dict[str, Any]:
    return {
        "id": "msg_01Abc", "type": "message", "role": "assistant", "model": MODEL, "content": content,
        "stop_reason": stop_reason, "stop_sequence": None,
        "usage": {"input_tokens": 10, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 300,
                  "output_tokens": 7},
    }


def test_response_with_text_thinking_and_tool_calls() -> None:
    message = anthropic_message([
        {"type": "thinking", "thinking": "Paris first.", "signature": "sig"},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ], "tool_use")
    completion = messages_to_chat(message, model=MODEL, created=1700000000)
    ChatCompletion.model_validate(completion)
    assert completion["id"] == "chatcmpl-01Abc"
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    assert choice["message"]["reasoning_content"] == "Paris first."
    assert choice["message"]["tool_calls"] == [{"id": "toolu_1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city":"Paris"}'}}]
    assert completion["usage"] == {"prompt_tokens": 330, "completion_tokens": 7, "total_tokens": 337,
                                   "prompt_tokens_details": {"cached_tokens": 300, "cache_write_tokens": 20}}


def test_response_with_only_tool_calls_has_null_content() -> None:
    message = anthropic_message([{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}], "tool_use")
    completion = messages_to_chat(message, model=MODEL, created=1)
    assert completion["choices"][0]["message"]["content"] is None
    assert completion["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == "{}"


@pytest.mark.parametrize("stop_reason, finish", [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("refusal", "content_filter"), ("pause_turn", "stop"), ("model_context_window_exceeded", "length"),
])
def test_finish_reasons(stop_reason: str, finish: str) -> None:
    completion = messages_to_chat(anthropic_message([text("x")], stop_reason), model=MODEL, created=1)
    ChatCompletion.model_validate(completion)
    assert completion["choices"][0]["finish_reason"] == finish


def sdk_client(body: bytes) -> openai.OpenAI:
    """An openai SDK client whose every request is answered 200 with `body` as an SSE stream."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    http_client = httpx2.Client(transport=httpx2.MockTransport(answer))
    return openai.OpenAI(
        api_key="sk_live_test", base_url="http://antex.test/v1", http_client=http_client, max_retries=0
    )
