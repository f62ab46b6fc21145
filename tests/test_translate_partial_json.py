"""antex.translate.partial_json: a JSON string field decoded while its JSON arrives in pieces."""

from __future__ import annotations

import orjson
import pytest

from antex.translate.partial_json import StringFieldReader

# Escapes, a quote, a backslash, a control character, a non-BMP emoji and non-ASCII text: every
# kind of escape sequence orjson and Claude produce, so every cut lands inside one somewhere.
TRICKY = '*** Begin Patch\n+say "hi" \\ there\t\x01 \U0001f600 caf\u00e9\n*** End Patch\n'


def feed_all(pieces: list[str]) -> str:
    reader = StringFieldReader("input")
    return "".join(reader.feed(piece) for piece in pieces)


@pytest.mark.parametrize("encoded", [
    orjson.dumps({"input": TRICKY}).decode(),
    '{ "input" : ' + orjson.dumps(TRICKY).decode() + " }",
    '{"input": "' + "".join(f"\\u{ord(char):04x}" for char in "ünïcode") + '"}',
    '{"input": "\\ud83d\\ude00 emoji as a surrogate pair"}',
])
def test_every_two_piece_split_decodes_the_same(encoded: str) -> None:
    expected = orjson.loads(encoded)["input"]
    for cut in range(len(encoded) + 1):
        assert feed_all([encoded[:cut], encoded[cut:]]) == expected, cut


def test_one_character_at_a_time() -> None:
    encoded = orjson.dumps({"input": TRICKY}).decode()
    assert feed_all(list(encoded)) == TRICKY


def test_text_arrives_as_it_comes() -> None:
    reader = StringFieldReader("input")
    assert [reader.feed(piece) for piece in ['{"inp', 'ut": "ab', "c\\", 'nd", ', '"x": 1}']] == [
        "", "ab", "c", "\nd", ""]


@pytest.mark.parametrize("pieces", [
    ['{"other": "x", "input": "late"}'],  # not the shape asked for: nothing streamed
    ["[1, 2, 3]"],
    ['{"input": "bad \\x escape"}'],
])
def test_other_shapes_stream_nothing(pieces: list[str]) -> None:
    assert feed_all(pieces) == ""
