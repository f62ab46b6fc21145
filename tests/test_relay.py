"""antex.relay: both kinds of relay meter a stream alike, whatever the front door."""

from __future__ import annotations

import random

import orjson
import pytest

from antex.relay import PassThrough, Translated
from antex.sse import DELTA_FRAME, TEXT_DELTA, TEXT_DELTA_RUN, MalformedStream, UsageMeter
from antex.translate.chat_stream import ChatStream
from antex.translate.responses_stream import ResponsesStream
from tests.fake_replies import text_reply

pytestmark = pytest.mark.usefixtures("timeless_ids")

FRAMES = text_reply("A reply long enough to be cut into a dozen deltas.", events=12).stream("msg_01r", "claude-sonnet-4-5", 9)


def translated(kind: str) -> Translated:
    if kind == "chat":
        return Translated(UsageMeter(), ChatStream(model="claude-sonnet-4-5", created=1, include_usage=True))
    return Translated(UsageMeter(), ResponsesStream(request={"model": "claude-sonnet-4-5", "input": "hi"},
                                                    custom_tools=frozenset(), created=1))


@pytest.mark.parametrize("kind", ["chat", "responses"])
@pytest.mark.parametrize("cut", [None, 5], ids=["whole", "cut after 5 frames"])
def test_translated_streams_are_metered_like_passed_through_ones(kind: str, cut: int | None) -> None:
    """Usage, stop reason, end and the streamed-size estimate (what a client that hangs up in
    "cancel" mode is charged at least) are the same through every door."""
    frames = FRAMES[:cut]
    through = PassThrough(UsageMeter())
    for frame in frames:
        through.observe(through.translate(frame))
    relay = translated(kind)
    for frame in frames:
        relay.translate(frame)
    got, want = relay.meter, through.meter
    assert (got.usage, got.stop_reason, got.finished, got.message_id) == (want.usage, want.stop_reason, want.finished, want.message_id)
    assert got.streamed_chars == want.streamed_chars > 0


def delta_frame(data: bytes) -> bytes:
    return b"event: content_block_delta\ndata: " + data + b"\n\n"


def text_delta(text: str, *, index: int = 0, reordered: bool = False) -> bytes:
    """A text_delta frame as Anthropic writes it, or the same event with its keys in another order
    (which the unparsed fast path does not recognise, so it goes the general way)."""
    if reordered:
        return delta_frame(orjson.dumps({"delta": {"text": text, "type": "text_delta"}, "index": index,
                                         "type": "content_block_delta"}))
    return delta_frame(orjson.dumps({"type": "content_block_delta", "index": index,
                                     "delta": {"type": "text_delta", "text": text}}))


def run(kind: str, middle: list[bytes], *, whole: bool = False) -> bytes:
    """FRAMES' opening (message_start, content_block_start), then `middle`, a chunk per frame or all
    in one chunk (so the text deltas come as one run); what the client gets."""
    relay = translated(kind)
    frames = FRAMES[:2] + middle
    return b"".join(relay.translate(frame) for frame in ([b"".join(frames)] if whole else frames))


def test_anthropic_text_deltas_take_the_unparsed_path() -> None:
    """The fast path must match what Anthropic (and the fake upstream) actually sends, or it is dead code."""
    deltas = [frame for frame in FRAMES if frame.startswith(DELTA_FRAME)]
    assert deltas and all(TEXT_DELTA.fullmatch(frame) for frame in deltas)
    assert TEXT_DELTA_RUN.fullmatch(b"".join(deltas))
    assert TEXT_DELTA.fullmatch(text_delta("x", reordered=True)) is None


@pytest.mark.parametrize("kind", ["chat", "responses"])
@pytest.mark.parametrize("seed", range(20))
def test_translation_does_not_depend_on_how_the_upstream_chunks_its_bytes(kind: str, seed: int) -> None:
    """Runs of text deltas are translated whole: cut anywhere, the client gets the same bytes, and
    the meter the same counts."""
    stream = b"".join(FRAMES[:2] + [text_delta(f"piece {n} ✓") for n in range(15)] + FRAMES[-3:])
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 40)))
    pieces = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
    one, cut = translated(kind), translated(kind)
    whole = one.translate(stream) + one.close()
    assert b"".join(cut.translate(piece) for piece in pieces) + cut.close() == whole
    assert (cut.meter.streamed_chars, cut.meter.usage) == (one.meter.streamed_chars, one.meter.usage)
    through = PassThrough(UsageMeter())
    for piece in pieces:
        through.observe(piece)
    assert through.meter.streamed_chars == one.meter.streamed_chars


@pytest.mark.parametrize("kind", ["chat", "responses"])
@pytest.mark.parametrize("text", ["plain", 'quotes " and \\ backslash', "new\nline\ttab", "ünïcødé ✓ 日本",
                                  "\u2028\u2029 \x00", '"}}', ""])
def test_unparsed_text_deltas_translate_like_parsed_ones(kind: str, text: str) -> None:
    """The same event read by the regex or by the parser gives the client the same bytes."""
    fast = run(kind, [text_delta(text), text_delta(text + "!")] + FRAMES[-3:])
    general = run(kind, [text_delta(text, reordered=True), text_delta(text + "!", reordered=True)] + FRAMES[-3:])
    assert fast == general == run(kind, [text_delta(text), text_delta(text + "!")] + FRAMES[-3:], whole=True)
    assert (text + "!").encode() in fast or orjson.dumps(text + "!")[1:-1] in fast


@pytest.mark.parametrize("kind", ["chat", "responses"])
def test_a_text_literal_escaped_otherwise_passes_as_the_same_text(kind: str) -> None:
    """Upstream's own escapes (\\u00e9, \\/) are forwarded as written: valid JSON, the same string."""
    escaped = delta_frame(b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"caf\\u00e9 a\\/b"}}')
    out = run(kind, [escaped] + FRAMES[-3:])
    datas = [orjson.loads(line[6:]) for line in out.split(b"\n") if line.startswith(b"data: {")]
    pieces = [d["choices"][0]["delta"].get("content") for d in datas if d.get("choices")] if kind == "chat" \
        else [d["delta"] for d in datas if d["type"] == "response.output_text.delta"]
    assert "café a/b" in pieces


@pytest.mark.parametrize("kind", ["chat", "responses"])
def test_a_delta_the_regex_misreads_goes_the_general_way(kind: str) -> None:
    """`(".*")` also spans `"a","extra":"b"`: not one JSON string, so the event is parsed instead."""
    tricky = delta_frame(b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a","extra":"b"}}')
    expected = run(kind, [text_delta("a"), text_delta("b")] + FRAMES[-3:])
    assert run(kind, [tricky, text_delta("b")] + FRAMES[-3:]) == expected
    assert run(kind, [tricky, text_delta("b")] + FRAMES[-3:], whole=True) == expected


@pytest.mark.parametrize("kind", ["chat", "responses"])
@pytest.mark.parametrize("literal", [b'"bad \\x escape"', b'"raw \x01 control"', b'"\xff\xfe not utf-8"'])
def test_a_broken_text_literal_fails_the_stream(kind: str, literal: bytes) -> None:
    broken = delta_frame(b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":' + literal + b"}}")
    for whole in (False, True):
        with pytest.raises(MalformedStream):
            run(kind, [text_delta("fine"), broken], whole=whole)


def test_a_text_delta_on_a_tool_block_goes_the_general_way() -> None:
    """Responses keeps per-block state: only an open message item takes the unparsed path."""
    relay = translated("responses")
    tool_start = b'event: content_block_start\ndata: {"type":"content_block_start","index":1,' \
                 b'"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}\n\n'
    relay.translate(FRAMES[0] + tool_start)
    out = relay.translate(text_delta("{}", index=1) + text_delta('"x"', index=1))
    assert out.count(b"event: response.function_call_arguments.delta\n") == 2


def test_a_run_spanning_two_blocks_goes_the_general_way() -> None:
    """Responses items are per block: a run whose deltas name two blocks is not one item's text."""
    second = b'event: content_block_start\ndata: {"type":"content_block_start","index":1,' \
             b'"content_block":{"type":"text","text":""}}\n\n'
    deltas = [text_delta("zero", index=0), text_delta("one", index=1), text_delta("zero again", index=0)]
    whole = run("responses", [second] + deltas, whole=True)
    assert whole == run("responses", [second] + deltas)
    datas = [orjson.loads(line[6:]) for line in whole.split(b"\n") if line.startswith(b"data: ")]
    assert [(d["output_index"], d["delta"]) for d in datas if d["type"] == "response.output_text.delta"] == [
        (0, "zero"), (1, "one"), (0, "zero again")]
