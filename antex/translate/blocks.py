"""Anthropic content blocks built from the pieces both OpenAI APIs share.

Chat Completions and the Responses API wrap images, files, tool calls and tool results in
different envelopes, but the payloads inside are the same: a URL, a data URL, a JSON-string of
arguments, a call id. Each front door unwraps its envelope and calls these.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from antex.translate import TranslationError

# Anthropic's accepted image types; `image/jpg` is a common misspelling of the first.
IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"data:(?P<media_type>[\w.+-]+/[\w.+-]+)(?:;[^,;]*)*?;base64,(?P<data>.*)", re.S)
_UNSAFE_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def require_text(value: object, *, param: str) -> str:
    """A field that must be a string, e.g. a part's `"text": "hello"`."""
    if not isinstance(value, str):
        raise TranslationError(f"{param} must be a string", param=param)
    return value


def _parse_data_url(url: str, *, param: str) -> tuple[str, str]:
    """`data:image/png;base64,iVBORw0KGgo…` -> ("image/png", "iVBORw0KGgo…")."""
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise TranslationError(
            f"{param} is not a base64 data URL (expected data:<media type>;base64,<data>)",
            param=param,
        )
    return match["media_type"].lower(), match["data"]


def image_block(url: object, *, param: str) -> dict[str, Any]:
    """An image by URL: `data:image/png;base64,iVBORw0…` inline, or `https://…/cat.png` fetched
    by Anthropic itself."""
    url = require_text(url, param=param)
    if url.startswith("data:"):
        media_type, data = _parse_data_url(url, param=param)
        media_type = "image/jpeg" if media_type == "image/jpg" else media_type
        if media_type not in IMAGE_MEDIA_TYPES:
            allowed = ", ".join(sorted(IMAGE_MEDIA_TYPES))
            raise TranslationError(
                f"{param}: image type {media_type} is not supported; use one of {allowed}",
                param=param,
            )
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise TranslationError(f"{param} must be an http(s) URL or a base64 data URL", param=param)


def document_block(file_data: object, *, param: str) -> dict[str, Any]:
    """A PDF sent inline as `data:application/pdf;base64,JVBERi0…` (files by id need storage we
    do not have)."""
    media_type, data = _parse_data_url(require_text(file_data, param=param), param=param)
    if media_type != "application/pdf":
        raise TranslationError(f"{param}: only PDF files (application/pdf) are supported", param=param)
    return {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}


def tool_use_id(call_id: object, *, param: str) -> str:
    """An OpenAI call id as an Anthropic tool_use id: `call_a.b` -> `call_a_b`.

    Anthropic accepts letters, digits, `_` and `-` only; the same mapping is applied to calls and
    to their results, so the pair still matches.
    """
    if not isinstance(call_id, str) or not call_id:
        raise TranslationError(f"{param} must be a non-empty string", param=param)
    return _UNSAFE_ID_CHARS.sub("_", call_id)


def parse_arguments(arguments: object, *, param: str) -> dict[str, Any]:
    """Tool-call arguments as sent by OpenAI clients: a JSON string, `'{"city": "Paris"}'`."""
    if isinstance(arguments, dict):  # some clients send the object itself
        return arguments
    if arguments is None or arguments == "":
        return {}
    if not isinstance(arguments, str):
        raise TranslationError(f"{param} must be a JSON string", param=param)
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError as error:
        raise TranslationError(f"{param} is not valid JSON: {error}", param=param) from None
    if not isinstance(value, dict):
        raise TranslationError(f"{param} must encode a JSON object", param=param)
    return value


def tool_use_block(
    call_id: object, name: object, tool_input: dict[str, Any], *, param: str
) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": tool_use_id(call_id, param=f"{param}.id"),
        "name": require_text(name, param=f"{param}.name"),
        "input": tool_input,
    }


def tool_result_block(call_id: object, content: str | list[dict[str, Any]], *, param: str) -> dict[str, Any]:
    """The answer to a tool call; `content` is a string or text/image blocks."""
    return {"type": "tool_result", "tool_use_id": tool_use_id(call_id, param=param), "content": content}
