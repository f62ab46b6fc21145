"""OpenAI Responses API (as Codex CLI speaks it) -> Anthropic Messages, and the reply back.

Custom (freeform) tools such as Codex's apply_patch take raw text, which Anthropic tools cannot:
each becomes a tool with one string property, `input`, and its grammar in the description.
`custom_tool_names(body)` tells the response translators which tool_use blocks to unwrap back
into `custom_tool_call` items. Hosted tools Anthropic cannot run for Codex (web_search,
local_shell, file_search, image_generation, …) are dropped, not refused: Codex sends web_search
when enabled and local_shell only for codex-mini models, and works without them.
Structured output (`text.format`) and reasoning follow the chat rules (see chat.py).
"""

from __future__ import annotations

from typing import Any

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
from antex.translate.outcome import incomplete_reason, responses_usage
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
from antex.translate.response_items import output_item, response_object, unpack_thinking
from antex.translate.responses_stream import ResponsesStream, response_base_id

__all__ = ["ResponsesStream", "custom_tool_names", "messages_to_response", "responses_to_messages"]

CUSTOM_TOOL_NOTE = (
    "This tool takes free-form text, not JSON arguments: put the complete raw input, exactly as "
    "the tool expects it, in the `input` string."
)
Turns = list[tuple[str, list[dict[str, Any]]]]


def responses_to_messages(
    body: dict[str, Any], *, default_max_tokens: int, thinking_supported: bool
) -> dict[str, Any]:
    """A Responses API request body -> the Anthropic Messages request body."""
    if not isinstance(body, dict):
        raise TranslationError("the request body must be a JSON object")
    if body.get("previous_response_id"):  # the route replays the stored conversation into `input` first
        raise TranslationError(
            "previous_response_id must be replaced by the stored conversation before translation",
            param="previous_response_id",
        )
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise TranslationError("instructions must be a string", param="instructions")
    system, turns = _conversation(body.get("input"))
    messages = merge_turns(turns)
    if not messages:
        raise TranslationError("input must include a user or assistant message", param="input")
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    request = MessagesRequest(
        model=model_field(body),
        messages=messages,
        max_tokens=max_tokens_field(body, ("max_output_tokens",), default_max_tokens),
        system=tuple([instructions] if instructions else []) + tuple(system),
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice")),
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        temperature=temperature_field(body),
        top_p=number_field(body, "top_p"),
        user_id=user_field(body),
        output_format=_output_format(text.get("format")),
        reasoning_effort=effort_field(reasoning.get("effort"), param="reasoning.effort"),
        stream=stream_field(body),
    )
    return anthropic_body(request, thinking_supported=thinking_supported)


def custom_tool_names(body: dict[str, Any]) -> frozenset[str]:
    """Names of the request's custom tools, whose calls go back as `custom_tool_call` items."""
    tools = body.get("tools") if isinstance(body, dict) else None
    return frozenset(
        tool["name"] for tool in tools or []
        if isinstance(tool, dict) and tool.get("type") == "custom" and isinstance(tool.get("name"), str)
    )


def _conversation(input_value: object) -> tuple[list[str], Turns]:
    """`input`: a string, or items like
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
    {"type": "function_call", "call_id": "call_1", "name": "shell", "arguments": "{\\"command\\": …}"},
    {"type": "function_call_output", "call_id": "call_1", "output": "done"},
    {"type": "custom_tool_call", "call_id": "call_2", "name": "apply_patch", "input": "*** Begin Patch…"},
    {"type": "reasoning", "summary": […], "encrypted_content": "antex.thinking.v1:…"}.
    Item references and previous_response_id are resolved from the store before this (see
    routes/responses.py). Items that carry nothing Anthropic can use (hosted tool calls, OpenAI's compaction blobs)
    are skipped, like the tools they came from."""
    if isinstance(input_value, str):
        return [], [("user", [text_block(input_value)])]
    if not isinstance(input_value, list):
        raise TranslationError("input must be a string or a list of items", param="input")
    system: list[str] = []
    turns: Turns = []
    for index, item in enumerate(input_value):
        param = f"input[{index}]"
        if not isinstance(item, dict):
            raise TranslationError(f"{param} must be an object", param=param)
        kind = item.get("type", "message")
        if kind == "message":
            _message(item, system, turns, param=param)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            result = _output_content(item.get("output"), param=f"{param}.output")
            turns.append(("user", [tool_result_block(item.get("call_id"), result, param=f"{param}.call_id")]))
        elif kind in ("function_call", "custom_tool_call", "local_shell_call"):
            turns.append(("assistant", [_call_block(item, kind, param=param)]))
        elif kind == "reasoning":
            block = unpack_thinking(item.get("encrypted_content"))
            turns.append(("assistant", [block] if block else []))
        elif kind == "item_reference":  # the route has put every stored item it names in its place
            raise TranslationError(
                f"{param}: an item_reference needs the id of a stored item, as a string", param=param
            )
    return system, turns


def _message(item: dict[str, Any], system: list[str], turns: Turns, *, param: str) -> None:
    role = item.get("role")
    blocks = _content_blocks(item.get("content"), param=f"{param}.content")
    if role in ("system", "developer"):
        if any(block["type"] != "text" for block in blocks):
            raise TranslationError(f"{param}: system and developer messages take text only", param=param)
        system.append("\n".join(block["text"] for block in blocks))
    elif role in ("user", "assistant"):
        turns.append((role, blocks))
    else:
        raise TranslationError(
            f"{param}.role must be user, assistant, system or developer", param=f"{param}.role"
        )


def _call_block(item: dict[str, Any], kind: str, *, param: str) -> dict[str, Any]:
    """A replayed tool call as tool_use: function arguments parsed, custom input wrapped the way
    the translated tool declares it, local_shell's action as the input."""
    if kind == "function_call":
        arguments = parse_arguments(item.get("arguments"), param=f"{param}.arguments")
        return tool_use_block(item.get("call_id"), item.get("name"), arguments, param=param)
    if kind == "custom_tool_call":
        tool_input = {"input": require_text(item.get("input"), param=f"{param}.input")}
        return tool_use_block(item.get("call_id"), item.get("name"), tool_input, param=param)
    action = item.get("action") if isinstance(item.get("action"), dict) else {}
    tool_input = {key: value for key, value in action.items() if key != "type"}
    return tool_use_block(item.get("call_id") or item.get("id"), "local_shell", tool_input, param=param)


def _part_block(part: object, *, param: str) -> dict[str, Any]:
    """{"type": "input_text", "text": "hi"}, {"type": "output_text", "text": "Hello"},
    {"type": "input_image", "image_url": "data:image/png;base64,iVBOR…", "detail": "auto"},
    {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,…"}."""
    if not isinstance(part, dict):
        raise TranslationError(f"{param} must be an object", param=param)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text", "summary_text"):
        return text_block(require_text(part.get("text"), param=f"{param}.text"))
    if kind == "refusal":
        return text_block(require_text(part.get("refusal"), param=f"{param}.refusal"))
    if kind == "input_image":
        if part.get("image_url") is None:
            raise TranslationError(
                f"{param}: send images as image_url (file ids are not supported)", param=param
            )
        return image_block(part["image_url"], param=f"{param}.image_url")
    if kind == "input_file":
        if part.get("file_data") is None:
            raise TranslationError(f"{param}: send files inline as file_data", param=param)
        return document_block(part["file_data"], param=f"{param}.file_data")
    raise TranslationError(f"{param}: content part type {kind!r} is not supported", param=f"{param}.type")


def _content_blocks(content: object, *, param: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [text_block(content)]
    if isinstance(content, list):
        return [_part_block(part, param=f"{param}[{index}]") for index, part in enumerate(content)]
    raise TranslationError(f"{param} must be a string or a list of content parts", param=param)


def _output_content(output: object, *, param: str) -> str | list[dict[str, Any]]:
    """A tool's output: "exit code 0…" or parts
    [{"type": "input_text", "text": "…"}, {"type": "input_image", "image_url": "data:…"}]."""
    return output if isinstance(output, str) else _content_blocks(output, param=param)


def _tools(tools: object) -> tuple[dict[str, Any], ...]:
    """[{"type": "function", "name": "shell", "description": "…", "parameters": {…}, "strict": false},
    {"type": "custom", "name": "apply_patch", "description": "…", "format": {…}},
    {"type": "web_search"}]"""
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise TranslationError("tools must be a list", param="tools")
    result = []
    for index, tool in enumerate(tools):
        param = f"tools[{index}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "function":
            result.append(function_tool(tool.get("name"), tool.get("description"), tool.get("parameters"),
                                        param=param))
        elif kind == "custom":
            result.append(_custom_tool(tool, param=param))
    return tuple(result)


def _custom_tool(tool: dict[str, Any], *, param: str) -> dict[str, Any]:
    """{"type": "custom", "name": "apply_patch", "description": "Use the `apply_patch` tool to
    edit files…", "format": {"type": "grammar", "syntax": "lark",
    "definition": "start: begin_patch hunk+ end_patch…"}}"""
    description = tool.get("description") if isinstance(tool.get("description"), str) else ""
    parts = [description, CUSTOM_TOOL_NOTE] if description else [CUSTOM_TOOL_NOTE]
    grammar = tool.get("format") if isinstance(tool.get("format"), dict) else {}
    if grammar.get("type") == "grammar" and isinstance(grammar.get("definition"), str):
        syntax = grammar.get("syntax") or "formal"
        parts.append(f"The input must match this {syntax} grammar:\n```\n{grammar['definition']}\n```")
    schema = {
        "type": "object",
        "properties": {"input": {"type": "string", "description": "The tool's complete raw input text."}},
        "required": ["input"],
        "additionalProperties": False,
    }
    return function_tool(tool.get("name"), "\n\n".join(parts), schema, param=param)


def _tool_choice(choice: object) -> ToolChoice | None:
    """"auto" | "none" | "required" | {"type": "function" or "custom", "name": "apply_patch"};
    choices of hosted tools, which are dropped, fall back to auto."""
    if choice is None or (isinstance(choice, dict) and choice.get("type") not in ("function", "custom")):
        return None
    if choice in ("auto", "none", "required"):
        return ToolChoice(str(choice))
    if isinstance(choice, dict) and isinstance(choice.get("name"), str) and choice["name"]:
        return ToolChoice("tool", choice["name"])
    raise TranslationError(
        'tool_choice must be "auto", "none", "required" or {"type": "function", "name": …}',
        param="tool_choice",
    )


def _output_format(text_format: object) -> OutputFormat | None:
    """text.format: {"type": "json_schema", "name": "answer", "schema": {…}, "strict": true},
    {"type": "json_object"} or {"type": "text"}."""
    kind = text_format.get("type") if isinstance(text_format, dict) else None
    if kind is None or kind == "text":
        return None
    if kind == "json_object":
        return OutputFormat("json_object")
    if kind == "json_schema":
        return json_schema_format(text_format.get("schema"), param="text.format.schema")
    raise TranslationError("text.format.type must be text, json_object or json_schema", param="text.format")


def messages_to_response(
    message: dict[str, Any], *, request: dict[str, Any], custom_tools: frozenset[str], created: int
) -> dict[str, Any]:
    """An Anthropic message -> a Responses API `response`. Reads
    {"id": "msg_01…", "content": [{"type": "text", …}, {"type": "tool_use", …}],
     "stop_reason": "max_tokens", "usage": {…}}"""
    base = response_base_id(message.get("id"))
    output = [
        item
        for index, block in enumerate(message.get("content") or [])
        if (item := output_item(block, base=base, index=index, custom_tools=custom_tools))
    ]
    reason = incomplete_reason(message.get("stop_reason"))
    return response_object(
        response_id=f"resp_{base}",
        request=request,
        created=created,
        status="incomplete" if reason else "completed",
        output=output,
        usage=responses_usage(message.get("usage") or {}),
        incomplete_details={"reason": reason} if reason else None,
    )
