"""antex.translate.responses: Responses API requests (as Codex CLI sends them) -> Messages, and
messages -> `response` objects, with no server.

Requests are shaped like Codex's (instructions, developer/user messages, a `shell` function
tool, the freeform `apply_patch` custom tool, hosted tools, reasoning, store: false); responses
are checked against the openai SDK's Response model.
"""

from __future__ import annotations

import re

from typing import Any

import pytest
from openai.types.responses import Response

from antex.translate import TranslationError
from antex.translate.request import JSON_OBJECT_INSTRUCTION
from antex.translate.response_items import pack_thinking, unpack_thinking
from antex.translate.responses import custom_tool_names, messages_to_response, responses_to_messages
from tests.test_translate_chat import MODEL, PNG, anthropic_checked, anthropic_message

pytestmark = pytest.mark.usefixtures("timeless_ids")

PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hi\n*** End Patch\n"
LARK = 'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF\nend_patch: "*** End Patch" LF?'
SHELL_TOOL = {
    "type": "function", "name": "shell", "description": "Runs a shell command and returns its output.",
    "strict": False,
    "parameters": {
        "type": "object",
        "properties": {"command": {"type": "array", "items": {"type": "string"}}},
        "required": ["command"],
        "additionalProperties": False,
    },
}
APPLY_PATCH_TOOL = {
    "type": "custom", "name": "apply_patch",
    "description": "Use the `apply_patch` tool to edit files. This is a FREEFORM tool, "
                   "so do not wrap the patch in JSON.",
    "format": {"type": "grammar", "syntax": "lark", "definition": LARK},
}
PATCHED = "Success. Updated: A hello.txt"
PERMISSIONS = "<permissions instructions>sandboxed</permissions instructions>"
ENVIRONMENT = "<environment_context>cwd=/repo</environment_context>"
SCHEMA = {"type": "object", "properties": {}, "additionalProperties": False}
CUSTOM = frozenset({"apply_patch"})  # custom_tool_names(codex_body())
CODEX_TOOLS = [SHELL_TOOL, APPLY_PATCH_TOOL, {"type": "web_search"}, {"type": "local_shell"}]


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def text_item(role: str, text: str, part: str = "input_text") -> dict[str, Any]:
    return {"type": "message", "role": role, "content": [{"type": part, "text": text}]}


def codex_body(**fields: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "instructions": "You are Codex, a coding agent.",
        "input": [
            text_item("developer", PERMISSIONS),
            text_item("user", ENVIRONMENT),
            text_item("user", "Add hello.txt"),
        ],
        "tools": CODEX_TOOLS, "tool_choice": "auto", "parallel_tool_calls": False,
        "reasoning": None, "store": False, "stream": True, "include": [], "prompt_cache_key": "c0ffee",
        **fields,
    }


def translate(thinking_supported: bool = True, **fields: Any) -> dict[str, Any]:
    body = codex_body(**fields)
    return responses_to_messages(body, default_max_tokens=8192, thinking_supported=thinking_supported)


SIGNED = {"type": "thinking", "thinking": "Add the file with apply_patch.", "signature": "EqSig=="}
TOOL_LOOP_INPUT = [
    text_item("user", "Add hello.txt"),
    {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": pack_thinking(SIGNED)},
    {"type": "custom_tool_call", "call_id": "toolu_a", "name": "apply_patch", "input": PATCH},
    {"type": "function_call", "call_id": "toolu_b", "name": "shell", "arguments": '{"command": ["ls"]}'},
    {"type": "custom_tool_call_output", "call_id": "toolu_a", "output": PATCHED},
    {"type": "function_call_output", "call_id": "toolu_b", "output": [
        {"type": "input_text", "text": "hello.txt"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}]},
]

REQUEST_CASES = {
    "instructions and developer messages hoisted to system": (
        {},
        {"system": f"You are Codex, a coding agent.\n\n{PERMISSIONS}",
         "messages": [{"role": "user", "content": [text(ENVIRONMENT), text("Add hello.txt")]}]},
    ),
    "input as a string": (
        {"input": "hi", "instructions": None}, {"messages": [{"role": "user", "content": [text("hi")]}]},
    ),
    "easy messages, images, assistant output_text": (
        {"input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Look"},
                                         {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"},
                                         {"type": "input_image", "image_url": "https://example.com/a.png"}]},
            text_item("assistant", "A cat.", "output_text"),
            {"role": "user", "content": "Thanks"},
        ]},
        {"messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
            {"role": "user", "content": [{"type": "text", "text": "Thanks"}]},
        ]},
    ),
    "tool loop: calls merged, results first, thinking replayed": (
        {"input": [*TOOL_LOOP_INPUT, text_item("user", "then stop")], "reasoning": {"effort": "low"}},
        {"messages": [
            {"role": "user", "content": [{"type": "text", "text": "Add hello.txt"}]},
            {"role": "assistant", "content": [
                SIGNED,
                {"type": "tool_use", "id": "toolu_a", "name": "apply_patch", "input": {"input": PATCH}},
                {"type": "tool_use", "id": "toolu_b", "name": "shell", "input": {"command": ["ls"]}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": PATCHED},
                {"type": "tool_result", "tool_use_id": "toolu_b", "content": [
                    {"type": "text", "text": "hello.txt"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]},
                {"type": "text", "text": "then stop"}]},
         ], "thinking": {"type": "enabled", "budget_tokens": 2048}},
    ),
    "replayed thinking dropped when thinking is off": (
        {"input": TOOL_LOOP_INPUT[:4] + TOOL_LOOP_INPUT[4:5]},
        {"messages": [
            {"role": "user", "content": [{"type": "text", "text": "Add hello.txt"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_a", "name": "apply_patch", "input": {"input": PATCH}},
                {"type": "tool_use", "id": "toolu_b", "name": "shell", "input": {"command": ["ls"]}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": PATCHED}]},
        ]},
    ),
    "OpenAI reasoning, hosted tool calls and compaction blobs skipped": (
        {"input": [text_item("user", "hi"),
                   {"type": "reasoning", "id": "rs_x", "summary": [], "encrypted_content": "gAAAAABopenai"},
                   {"type": "web_search_call", "id": "ws_1", "action": {"type": "search"}},
                   {"type": "compaction", "encrypted_content": "gAAAA"},
                   text_item("assistant", "hello", "output_text")]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "hello"}]}]},
    ),
    "local_shell history replayed as a tool call": (
        {"input": [text_item("user", "ls"),
                   {"type": "local_shell_call", "id": "lsh_1", "call_id": "call_9", "status": "completed",
                    "action": {"type": "exec", "command": ["ls"], "timeout_ms": 1000}},
                   {"type": "function_call_output", "call_id": "call_9", "output": "a.txt"}]},
        {"messages": [
            {"role": "user", "content": [{"type": "text", "text": "ls"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_9", "name": "local_shell",
                 "input": {"command": ["ls"], "timeout_ms": 1000}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_9", "content": "a.txt"}]},
        ]},
    ),
    "reasoning effort as thinking": ({"reasoning": {"effort": "high", "summary": "auto"}},
                                     {"thinking": {"type": "enabled", "budget_tokens": 4096}}),
    "max_output_tokens": ({"max_output_tokens": 1000}, {"max_tokens": 1000}),
    "default max tokens": ({}, {"max_tokens": 8192}),
    "temperature clamped, top_p kept alone": ({"temperature": 2}, {"temperature": 1.0}),
    "no parallel tool calls": ({}, {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}),
    "forced custom tool": (
        {"tool_choice": {"type": "custom", "name": "apply_patch"}, "parallel_tool_calls": True},
        {"tool_choice": {"type": "tool", "name": "apply_patch"}}),
    "hosted tool choice falls back to auto": (
        {"tool_choice": {"type": "web_search"}, "parallel_tool_calls": True}, {"tool_choice": None}),
    "required tool": (
        {"tool_choice": "required"}, {"tool_choice": {"type": "any", "disable_parallel_tool_use": True}}),
    "json schema output (codex exec --output-schema)": (
        {"text": {"verbosity": "low",
                  "format": {"type": "json_schema", "name": "out", "strict": True, "schema": SCHEMA}}},
        {"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}},
    ),
    "json object as an instruction": (
        {"instructions": None, "input": "hi", "text": {"format": {"type": "json_object"}}},
        {"system": JSON_OBJECT_INSTRUCTION},
    ),
    "stream passed through": ({"stream": True}, {"stream": True}),
    "user as metadata": ({"user": "bob"}, {"metadata": {"user_id": "bob"}}),
}


@pytest.mark.parametrize("fields, expected", REQUEST_CASES.values(), ids=REQUEST_CASES.keys())
def test_request_translation(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    body = anthropic_checked(translate(**fields))
    assert {key: body.get(key) for key in expected} == expected
    assert body["cache_control"] == {"type": "ephemeral"}
    assert not {"store", "include", "prompt_cache_key", "reasoning", "text", "input"} & body.keys()


def test_tools_translated_and_hosted_ones_dropped() -> None:
    shell, apply_patch = translate()["tools"]
    assert shell == {
        "name": "shell", "description": SHELL_TOOL["description"], "input_schema": SHELL_TOOL["parameters"]}
    assert apply_patch["name"] == "apply_patch"
    assert apply_patch["input_schema"] == {
        "type": "object",
        "properties": {"input": {"type": "string", "description": "The tool's complete raw input text."}},
        "required": ["input"],
        "additionalProperties": False,
    }
    description = apply_patch["description"]
    assert description.startswith(APPLY_PATCH_TOOL["description"])
    assert "`input` string" in description
    assert f"lark grammar:\n```\n{LARK}\n```" in description
    assert custom_tool_names(codex_body()) == frozenset({"apply_patch"})
    assert custom_tool_names({"tools": None}) == frozenset()


def test_thinking_off_mid_tool_loop_without_replayed_thinking() -> None:
    loop = [item for item in TOOL_LOOP_INPUT if item["type"] != "reasoning"]
    assert "thinking" not in translate(input=loop, reasoning={"effort": "low"})


@pytest.mark.parametrize("block", [SIGNED, {"type": "redacted_thinking", "data": "EmwKAhgB"}])
def test_thinking_round_trips_through_encrypted_content(block: dict[str, Any]) -> None:
    assert unpack_thinking(pack_thinking(block)) == block


@pytest.mark.parametrize("encrypted_content", [
    None, "gAAAAABoOpenAIEncrypted", "antex.thinking.v1:not base64!", "antex.thinking.v1:e30=",
    "antex.thinking.v1:eyJ0eXBlIjoidGhpbmtpbmcifQ==",  # {"type":"thinking"}: no text, no signature
])
def test_foreign_or_damaged_reasoning_is_not_replayed(encrypted_content: object) -> None:
    assert unpack_thinking(encrypted_content) is None


ERROR_CASES = {
    "previous_response_id": ({"previous_response_id": "resp_1"}, "previous_response_id"),
    "input missing": ({"input": None}, "input"),
    "only developer input": ({"input": [text_item("developer", "x")]}, "input"),
    "bad function arguments": (
        {"input": [{"type": "function_call", "call_id": "c", "name": "shell", "arguments": "{"}]},
        "input[0].arguments"),
    "custom call without input": (
        {"input": [{"type": "custom_tool_call", "call_id": "c", "name": "apply_patch"}]}, "input[0].input"),
    "output without call id": (
        {"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    "item reference": ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
    "unknown role": ({"input": [{"type": "message", "role": "tool", "content": "x"}]}, "input[0].role"),
    "image by file id": (
        {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
        "input[0].content[0]"),
    "unknown part": (
        {"input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input[0].content[0].type"),
    "instructions not a string": ({"instructions": ["x"]}, "instructions"),
    "unknown effort": ({"reasoning": {"effort": "max"}}, "reasoning.effort"),
    "bad tool choice": ({"tool_choice": "always"}, "tool_choice"),
    "function tool without name": ({"tools": [{"type": "function", "parameters": {}}]}, "tools[0].name"),
    "bad text format": ({"text": {"format": {"type": "xml"}}}, "text.format"),
    "model missing": ({"model": ""}, "model"),
}


@pytest.mark.parametrize("fields, param", ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_request_errors(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as error:
        translate(**fields)
    assert error.value.param == param


# ---- the non-streaming reply ---------------------------------------------------------------------


def test_non_stream_response() -> None:
    message = anthropic_message([
        {"type": "thinking", "thinking": "Plan.", "signature": "EqSig=="},
        {"type": "text", "text": "Adding."},
        {"type": "tool_use", "id": "toolu_a", "name": "apply_patch", "input": {"input": PATCH}},
        {"type": "tool_use", "id": "toolu_b", "name": "shell", "input": {"command": ["ls"]}},
    ], "tool_use")
    response = messages_to_response(message, request=codex_body(), custom_tools=CUSTOM, created=1700000000)
    Response.model_validate(response)
    stem = response["id"].removeprefix("resp_")
    assert re.fullmatch(r"[0-9a-f]{11}01Abc", stem)  # the time, then the upstream message's id
    assert (response["status"], response["incomplete_details"]) == ("completed", None)
    reasoning, text, patch, shell = response["output"]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Plan."}]
    assert text["content"] == [{"type": "output_text", "text": "Adding.", "annotations": []}]
    assert patch == {"type": "custom_tool_call", "id": f"ctc_{stem}_2", "call_id": "toolu_a",
                     "name": "apply_patch", "input": PATCH}
    assert shell == {"type": "function_call", "id": f"fc_{stem}_3", "call_id": "toolu_b", "name": "shell",
                     "arguments": '{"command":["ls"]}', "status": "completed"}
    assert response["usage"] == {
        "input_tokens": 330, "input_tokens_details": {"cached_tokens": 300, "cache_write_tokens": 20},
        "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 337}


@pytest.mark.parametrize("stop_reason, status, reason", [
    ("end_turn", "completed", None), ("tool_use", "completed", None), ("stop_sequence", "completed", None),
    ("max_tokens", "incomplete", "max_output_tokens"), ("refusal", "incomplete", "content_filter"),
])
def test_non_stream_status(stop_reason: str, status: str, reason: str | None) -> None:
    response = messages_to_response(anthropic_message([{"type": "text", "text": "x"}], stop_reason),
                                    request=codex_body(), custom_tools=CUSTOM, created=1)
    Response.model_validate(response)
    assert response["status"] == status
    assert response["incomplete_details"] == (reason and {"reason": reason})
