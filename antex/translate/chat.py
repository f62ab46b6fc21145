"""OpenAI Chat Completions <-> Anthropic Messages: requests, responses and streams.

Structured output: `response_format` json_schema becomes Anthropic's native
`output_config.format` (constrained decoding, no beta header); json_object, which has no schema,
becomes a system instruction. Reasoning: `reasoning_effort` becomes a thinking budget (see
request.EFFORT_BUDGET_TOKENS) and thinking comes back as `reasoning_content`.
"""

from __future__ import annotations

from typing import Any

import orjson

from antex.translate import TranslationError
from antex.translate.blocks import (
    document_block,
    image_block,
    parse_arguments,
    require_text,
    text_block,
    tool_result_block,
    tool_use_block,
)
from antex.translate.chat_stream import ChatStream, chat_id
from antex.translate.outcome import chat_usage, finish_reason
from antex.translate.request import (
    MessagesRequest,
    OutputFormat,
    ToolChoice,
    anthropic_body,
    effort_field,
    function_tool,
    json_schema_format,
    max_tokens_field,
    merge_turns,
    model_field,
    number_field,
    stream_field,
    temperature_field,
    user_field,
)

__all__ = ["ChatStream", "chat_to_messages", "messages_to_chat"]


def chat_to_messages(
    body: dict[str, Any], *, default_max_tokens: int, thinking_supported: bool
) -> dict[str, Any]:
    """An OpenAI chat request body -> the Anthropic Messages request body."""
    if not isinstance(body, dict):
        raise TranslationError("the request body must be a JSON object")
    if not isinstance(body.get("stream_options"), dict | None):
        raise TranslationError("stream_options must be an object", param="stream_options")
    n = body.get("n")
    if n not in (None, 1):
        raise TranslationError("n must be 1: one choice per request is supported", param="n")
    system, turns = _conversation(body.get("messages"))
    messages = merge_turns(turns)
    if not messages:
        raise TranslationError("messages must include a user or assistant message", param="messages")
    request = MessagesRequest(
        model=model_field(body),
        messages=messages,
        max_tokens=max_tokens_field(body, ("max_completion_tokens", "max_tokens"), default_max_tokens),
        system=tuple(system),
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice")),
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        temperature=temperature_field(body),
        top_p=number_field(body, "top_p"),
        stop_sequences=_stop(body.get("stop")),
        user_id=user_field(body),
        output_format=_output_format(body.get("response_format")),
        reasoning_effort=effort_field(body.get("reasoning_effort"), param="reasoning_effort"),
        stream=stream_field(body),
    )
    return anthropic_body(request, thinking_supported=thinking_supported)


def _conversation(messages: object) -> tuple[list[str], list[tuple[str, list[dict[str, Any]]]]]:
    """System/developer text hoisted out; the rest as (anthropic role, blocks) turns."""
    if not isinstance(messages, list) or not messages:
        raise TranslationError("messages must be a non-empty list", param="messages")
    system: list[str] = []
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise TranslationError(f"{param} must be an object", param=param)
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text_only(message.get("content"), param=f"{param}.content"))
        elif role == "user":
            turns.append(("user", _content_blocks(message.get("content"), param=f"{param}.content")))
        elif role == "assistant":
            turns.append(("assistant", _assistant_blocks(message, param=param)))
        elif role == "tool":
            turns.append(("user", [_tool_result(message, param=param)]))
        else:
            raise TranslationError(
                f"{param}.role must be system, developer, user, assistant or tool", param=f"{param}.role"
            )
    return system, turns


def _part_block(part: object, *, param: str) -> dict[str, Any]:
    """One content part: {"type": "text", "text": "hi"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR…", "detail": "auto"}},
    {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,…"}}."""
    if not isinstance(part, dict):
        raise TranslationError(f"{param} must be an object", param=param)
    kind = part.get("type")
    if kind == "text":
        return text_block(require_text(part.get("text"), param=f"{param}.text"))
    if kind == "refusal":  # an earlier assistant refusal, replayed
        return text_block(require_text(part.get("refusal"), param=f"{param}.refusal"))
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return image_block(url, param=f"{param}.image_url.url")
    if kind == "file":
        file = part.get("file") if isinstance(part.get("file"), dict) else {}
        if "file_data" not in file:
            raise TranslationError(f"{param}: send files inline as file.file_data", param=f"{param}.file")
        return document_block(file["file_data"], param=f"{param}.file.file_data")
    raise TranslationError(f"{param}: content part type {kind!r} is not supported", param=f"{param}.type")


def _content_blocks(content: object, *, param: str) -> list[dict[str, Any]]:
    """Message content: "hello", a list of parts, or null (an assistant turn with tool calls)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [text_block(content)]
    if isinstance(content, list):
        return [_part_block(part, param=f"{param}[{index}]") for index, part in enumerate(content)]
    raise TranslationError(f"{param} must be a string or a list of content parts", param=param)


def _text_only(content: object, *, param: str) -> str:
    blocks = _content_blocks(content, param=param)
    if any(block["type"] != "text" for block in blocks):
        raise TranslationError(f"{param}: system and developer messages take text only", param=param)
    return "\n".join(block["text"] for block in blocks)


def _assistant_blocks(message: dict[str, Any], *, param: str) -> list[dict[str, Any]]:
    """{"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
    "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}"""
    blocks = _content_blocks(message.get("content"), param=f"{param}.content")
    tool_calls = message.get("tool_calls") or []
    if not isinstance(tool_calls, list):
        raise TranslationError(f"{param}.tool_calls must be a list", param=f"{param}.tool_calls")
    for index, call in enumerate(tool_calls):
        call_param = f"{param}.tool_calls[{index}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise TranslationError(f"{call_param}.function must be an object", param=f"{call_param}.function")
        arguments = parse_arguments(function.get("arguments"), param=f"{call_param}.function.arguments")
        blocks.append(tool_use_block(call.get("id"), function.get("name"), arguments, param=call_param))
    return blocks


def _tool_result(message: dict[str, Any], *, param: str) -> dict[str, Any]:
    """{"role": "tool", "tool_call_id": "call_1", "content": "18°C and sunny"}"""
    content = message.get("content")
    result = content if isinstance(content, str) else _content_blocks(content, param=f"{param}.content")
    return tool_result_block(message.get("tool_call_id"), result, param=f"{param}.tool_call_id")


def _tools(tools: object) -> tuple[dict[str, Any], ...]:
    """[{"type": "function", "function": {"name": "get_weather", "description": "…",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]"""
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise TranslationError("tools must be a list", param="tools")
    result = []
    for index, tool in enumerate(tools):
        param = f"tools[{index}]"
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict):
            raise TranslationError(f"{param}: only function tools are supported", param=param)
        result.append(function_tool(function.get("name"), function.get("description"),
                                    function.get("parameters"), param=f"{param}.function"))
    return tuple(result)


def _tool_choice(choice: object) -> ToolChoice | None:
    """"auto" | "none" | "required" | {"type": "function", "function": {"name": "get_weather"}}"""
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        return ToolChoice(str(choice))
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return ToolChoice("tool", name)
    raise TranslationError(
        'tool_choice must be "auto", "none", "required" or {"type": "function", "function": {"name": …}}',
        param="tool_choice",
    )


def _stop(stop: object) -> tuple[str, ...]:
    """"\\n\\n" or ["END", "STOP"]."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(item, str) for item in stop):
        return tuple(stop)
    raise TranslationError("stop must be a string or a list of strings", param="stop")


def _output_format(response_format: object) -> OutputFormat | None:
    """{"type": "json_schema", "json_schema": {"name": "answer", "schema": {…}, "strict": true}},
    {"type": "json_object"} or {"type": "text"}."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return OutputFormat("json_object")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return json_schema_format(schema, param="response_format.json_schema.schema")
    raise TranslationError(
        "response_format.type must be text, json_object or json_schema", param="response_format"
    )


# ---- the non-streaming reply ---------------------------------------------------------------------


def _tool_call(block: dict[str, Any]) -> dict[str, Any]:
    arguments = orjson.dumps(block.get("input") or {}).decode()
    function = {"name": block["name"], "arguments": arguments}
    return {"id": block["id"], "type": "function", "function": function}


def messages_to_chat(message: dict[str, Any], *, model: str, created: int) -> dict[str, Any]:
    """An Anthropic message -> a `chat.completion`. Reads
    {"id": "msg_01…", "content": [{"type": "thinking", …}, {"type": "text", "text": "Hi"},
     {"type": "tool_use", "id": "toolu_01…", "name": "f", "input": {}}],
     "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 5, …}}"""
    blocks = message.get("content") or []
    texts = [block["text"] for block in blocks if block.get("type") == "text"]
    reasoning = [block["thinking"] for block in blocks if block.get("type") == "thinking"]
    tool_calls = [_tool_call(block) for block in blocks if block.get("type") == "tool_use"]
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not tool_calls else None,
        "refusal": None,
    }
    if tool_calls:
        reply["tool_calls"] = tool_calls
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)
    return {
        "id": chat_id(message.get("id")),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": reply,
            "logprobs": None,
            "finish_reason": finish_reason(message.get("stop_reason")),
        }],
        "usage": chat_usage(message.get("usage") or {}),
    }
