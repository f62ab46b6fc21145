"""Decoding one string field of a JSON object while the JSON is still arriving.

Claude streams a custom tool's raw input wrapped in the JSON we asked for, in pieces:
    '{"input": "*** Begin Pa'  'tch\\n*** Add File: a.txt\\n+hi'  '\\n*** End Patch\\n"}'
Codex wants the raw text as it comes (custom_tool_call_input.delta), so each piece is decoded
up to the last complete escape sequence; the rest waits for the next piece.
"""

from __future__ import annotations

import re

import orjson


class StringFieldReader:
    """`feed(piece)` returns the newly decoded characters of `field`'s string value."""

    def __init__(self, field: str) -> None:
        self._opening = re.compile(r'\s*\{\s*"' + re.escape(field) + r'"\s*:\s*"')
        self._buffer = ""
        self._inside = False
        self._done = False

    def feed(self, piece: str) -> str:
        if self._done:
            return ""
        self._buffer += piece
        if not self._inside:
            opening = self._opening.match(self._buffer)
            if opening is None:
                # Not (yet) the shape we asked for: give up once it cannot become it.
                self._done = len(self._buffer) > 200
                return ""
            self._inside = True
            self._buffer = self._buffer[opening.end():]
        end, closed = _decodable_end(self._buffer)
        segment, self._buffer = self._buffer[:end], self._buffer[end:]
        self._done = closed
        try:
            return orjson.loads('"' + segment + '"') if segment else ""
        except orjson.JSONDecodeError:
            self._done = True  # malformed: the final, whole input still goes out at the end
            return ""


def _decodable_end(escaped: str) -> tuple[int, bool]:
    """How much of a JSON string's inside (after the opening quote) decodes on its own, and
    whether the closing quote was reached. Escapes are never split, surrogate pairs neither."""
    index = 0
    while index < len(escaped):
        char = escaped[index]
        if char == '"':
            return index, True
        if char != "\\":
            index += 1
            continue
        if escaped[index + 1:index + 2] != "u":
            step = 2
        elif 0xD800 <= _code_unit(escaped[index + 2:index + 6]) <= 0xDBFF:
            step = 12  # a high surrogate and the low one after it
        else:
            step = 6
        if index + step > len(escaped):
            break
        index += step
    return index, False


def _code_unit(hex_digits: str) -> int:
    if len(hex_digits) < 4:
        return 0xD800  # incomplete: wait for the rest
    try:
        return int(hex_digits, 16)
    except ValueError:
        return 0  # malformed: orjson says so when the segment is decoded
