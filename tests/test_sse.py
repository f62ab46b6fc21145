"""antex.sse: SSE frames cut from bytes however they are chunked, and usage read from them."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antex import sse
from antex.sse import MalformedStream, SSEReader, UsageMeter

SETTINGS = settings(deadline=None, database=None, max_examples=200)


def read(chunks: list[bytes]) -> tuple[list[tuple[str, bytes]], bytes]:
    """Every frame the chunks make, and the bytes left of an unfinished one."""
    reader = SSEReader()
    frames = [frame for chunk in chunks for frame in reader.feed(chunk)]
    return frames, reader.pending


def read_complete(chunks: list[bytes]) -> tuple[list[tuple[str, bytes]], bytes]:
    """The same, through SSEReader.complete (whole frames at once, as the relays read them)."""
    reader = SSEReader()
    done = b"".join(reader.complete(chunk) for chunk in chunks)
    assert done.endswith(b"\n\n") or not done
    frames = [sse.parse(raw) for raw in done.split(b"\n\n")[:-1]]
    return [frame for frame in frames if frame is not None], reader.pending


def byte_by_byte(stream: bytes) -> list[bytes]:
    return [stream[i:i + 1] for i in range(len(stream))]


# framing


@pytest.mark.parametrize(
    "stream, frames, pending",
    [
        pytest.param(b'event: ping\ndata: {"type": "ping"}\n\n', [("ping", b'{"type": "ping"}')], b"", id="LF"),
        pytest.param(b"event: a\r\ndata: 1\r\n\r\nevent: b\r\ndata: 2\r\n\r\n", [("a", b"1"), ("b", b"2")], b"", id="CRLF"),
        pytest.param(b"event: a\rdata: 1\r\r", [("a", b"1")], b"", id="CR"),
        pytest.param(b"data: no event line\n\n", [("message", b"no event line")], b"", id="default event"),
        pytest.param(b"data:tight\n\n", [("message", b"tight")], b"", id="no space after colon"),
        pytest.param(b"data:  two spaces\n\n", [("message", b" two spaces")], b"", id="only one space stripped"),
        pytest.param(b"data: a\ndata: b\ndata:\ndata: c\n\n", [("message", b"a\nb\n\nc")], b"", id="multi-line data"),
        pytest.param(b'data: {"a": "x: y"}\n\n', [("message", b'{"a": "x: y"}')], b"", id="colon in value"),
        pytest.param(b": keep-alive\n\n: ping\r\n\r\n", [], b"", id="comments only"),
        pytest.param(b"event: a\n: comment\ndata: 1\nid: 7\nretry: 10\n\n", [("a", b"1")], b"", id="other fields ignored"),
        pytest.param(b"event: lonely\n\n", [], b"", id="no data: no frame"),
        pytest.param(b"data: 1\n\ndata: 2\n", [("message", b"1")], b"data: 2\n", id="unfinished frame pending"),
        pytest.param("event: é\ndata: ünï\n\n".encode(), [("é", "ünï".encode())], b"", id="UTF-8"),
    ],
)
@pytest.mark.parametrize("split", [lambda s: [s], byte_by_byte, lambda s: [s[:7], b"", s[7:]]], ids=["whole", "bytes", "at 7"])
def test_frames(stream: bytes, frames: list[tuple[str, bytes]], pending: bytes, split) -> None:
    assert read(split(stream)) == (frames, pending)


line_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12)
frame_strategy = st.tuples(
    st.one_of(st.none(), st.from_regex(r"[a-z_]{1,14}", fullmatch=True)),
    st.lists(line_text, min_size=1, max_size=3),
    st.booleans(),  # a comment line inside the frame
)


@SETTINGS
@given(
    frames=st.lists(frame_strategy, max_size=6),
    newline=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    keepalive=st.booleans(),
    cuts=st.lists(st.integers(0, 2000), max_size=12),
)
def test_any_chunking_gives_the_same_frames(frames, newline: bytes, keepalive: bool, cuts: list[int]) -> None:
    stream = b""
    expected = []
    for event, lines, comment in frames:
        if keepalive:
            stream += b": keep-alive" + newline + newline
        head = [b": note"] if comment else []
        head += [b"event: " + event.encode()] if event else []
        stream += newline.join(head + [b"data: " + line.encode() for line in lines]) + newline + newline
        expected.append((event or "message", "\n".join(lines).encode()))
    bounds = sorted({0, len(stream), *(cut % (len(stream) + 1) for cut in cuts)})
    chunks = [stream[a:b] for a, b in zip(bounds, bounds[1:])]
    assert read(chunks) == (expected, b"")
    assert read_complete(chunks) == (expected, b"")


def test_a_frame_that_never_ends_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "MAX_FRAME_BYTES", 64)
    reader = SSEReader()
    assert list(reader.feed(b"data: " + b"x" * 50)) == []
    with pytest.raises(MalformedStream):
        list(reader.feed(b"x" * 20))
    reader = SSEReader()
    assert reader.complete(b"data: " + b"x" * 50) == b""
    with pytest.raises(MalformedStream):
        reader.complete(b"x" * 20)


# usage


def frame(event: str, payload: object) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


START_USAGE = {"input_tokens": 25, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 5,
               "output_tokens": 1, "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 0}}
MESSAGE_START = {"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant",
                                                      "model": "claude-sonnet-4-6", "content": [], "usage": START_USAGE}}


def delta(usage: dict | None, stop_reason: str | None = "end_turn") -> dict:
    payload: dict = {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}}
    if usage is not None:
        payload["usage"] = usage
    return payload


ANTHROPIC_STREAM = b"".join([
    frame("message_start", MESSAGE_START),
    frame("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    frame("ping", {"type": "ping"}),
    frame("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
    frame("content_block_stop", {"type": "content_block_stop", "index": 0}),
    frame("message_delta", delta({"output_tokens": 15})),
    frame("message_stop", {"type": "message_stop"}),
])


def meter_of(chunks: list[bytes]) -> UsageMeter:
    meter = UsageMeter()
    reader = SSEReader()
    for chunk in chunks:
        for event, data in reader.feed(chunk):
            meter.observe(event, data)
    return meter


@pytest.mark.parametrize("split", [lambda s: [s], byte_by_byte], ids=["whole", "bytes"])
def test_a_whole_stream_is_metered(split) -> None:
    meter = meter_of(split(ANTHROPIC_STREAM))
    assert meter.usage == {**START_USAGE, "output_tokens": 15}
    assert (meter.message_id, meter.stop_reason, meter.finished, meter.error) == ("msg_01", "end_turn", True, None)
    assert meter.streamed_chars > 0


@pytest.mark.parametrize(
    "deltas, expected",
    [
        pytest.param([{"output_tokens": 15}], {"output_tokens": 15}, id="output overwritten, not 16"),
        pytest.param([{"output_tokens": 10}, {"output_tokens": 15}], {"output_tokens": 15}, id="two deltas, not 26"),
        pytest.param(
            [{"input_tokens": 30, "cache_read_input_tokens": 5, "output_tokens": 40}],
            {"input_tokens": 30, "output_tokens": 40},
            id="cumulative input after server tools, not 55",
        ),
        pytest.param(
            [{"input_tokens": None, "cache_creation_input_tokens": None, "output_tokens": 3}],
            {"output_tokens": 3},
            id="null fields keep the start value",
        ),
        pytest.param([{}], {}, id="empty delta usage"),
        pytest.param(
            [{"cache_creation": {"ephemeral_5m_input_tokens": 4, "ephemeral_1h_input_tokens": 6}}],
            {"cache_creation": {"ephemeral_5m_input_tokens": 4, "ephemeral_1h_input_tokens": 6}},
            id="cache split replaced whole",
        ),
        pytest.param([{"service_tier": "standard", "inference_geo": "us"}], {}, id="other fields not kept"),
        pytest.param([{"server_tool_use": {"web_search_requests": 3}}],
                     {"server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 1}},
                     id="server tool uses merged key by key"),
        pytest.param([{"server_tool_use": {"web_search_requests": 2, "web_fetch_requests": None}},
                      {"server_tool_use": {"web_fetch_requests": 4}}],
                     {"server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 4}},
                     id="server tool uses over two deltas, nulls keep the value"),
        pytest.param([{"server_tool_use": None}], {}, id="null server tool use keeps the start's"),
        pytest.param([{"cache_creation": {"ephemeral_1h_input_tokens": 6}}],
                     {"cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 6}},
                     id="cache split merged key by key"),
    ],
)
def test_message_delta_usage_overwrites_field_by_field(deltas: list[dict], expected: dict) -> None:
    meter = UsageMeter()
    start = {**MESSAGE_START, "message": {**MESSAGE_START["message"], "usage": {
        **START_USAGE, "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 1}}}}
    meter.observe("message_start", orjson.dumps(start))
    for usage in deltas:
        meter.observe("message_delta", orjson.dumps(delta(usage)))
    assert meter.usage == {**START_USAGE, "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 1}, **expected}


@pytest.mark.parametrize(
    "payloads, stop_reason",
    [
        ([delta(None, "max_tokens")], "max_tokens"),
        ([delta(None, "tool_use"), delta(None, None)], "tool_use"),  # a later null does not erase it
        ([delta(None, None)], None),
        ([], None),
    ],
)
def test_stop_reason(payloads: list[dict], stop_reason: str | None) -> None:
    meter = UsageMeter()
    for payload in payloads:
        meter.observe("message_delta", orjson.dumps(payload))
    assert meter.stop_reason == stop_reason


@pytest.mark.parametrize(
    "payload, error",
    [
        ({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
         {"type": "overloaded_error", "message": "Overloaded"}),
        ({"type": "error", "error": "boom"}, {"type": "api_error", "message": "upstream error"}),
        ({"type": "error"}, {"type": "api_error", "message": "upstream error"}),
    ],
)
def test_an_error_event_is_kept_and_the_stream_is_not_finished(payload: dict, error: dict) -> None:
    meter = meter_of([frame("message_start", MESSAGE_START), frame("error", payload)])
    assert (meter.error, meter.finished, meter.usage) == (error, False, START_USAGE)


def test_only_message_stop_finishes() -> None:
    meter = meter_of([ANTHROPIC_STREAM.rsplit(b"event: message_stop", 1)[0]])
    assert (meter.finished, meter.stop_reason) == (False, "end_turn")
    meter.observe("message_stop", b'{"type":"message_stop"}')
    assert meter.finished


@pytest.mark.parametrize("event", ["message_start", "message_delta", "message_stop", "error"])
@pytest.mark.parametrize("data", [b"{not json", b'{"type": "message_start", "message": {"id": ', b""])
def test_malformed_json_in_a_metered_event_raises(event: str, data: bytes) -> None:
    with pytest.raises(MalformedStream, match=event):
        UsageMeter().observe(event, data)


@pytest.mark.parametrize(
    "event, data, returned",
    [
        ("content_block_delta", b"{not json at all, never parsed}", None),
        ("ping", b"{not json", None),
        ("content_block_start", b"{not json", None),
        ("message_start", b"[1, 2]", [1, 2]),
        ("message_delta", b'"text"', "text"),
        ("message_stop", b'{"type": "message_stop"}', {"type": "message_stop"}),
    ],
)
def test_frames_that_carry_no_usage_are_not_trusted_or_not_parsed(event: str, data: bytes, returned: object) -> None:
    meter = UsageMeter()
    assert meter.observe(event, data) == returned
    assert (meter.usage, meter.error, meter.stop_reason) == ({}, None, None)
