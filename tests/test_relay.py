"""antex.relay: both kinds of relay meter a stream alike, whatever the front door."""

from __future__ import annotations

import pytest

from antex.relay import PassThrough, Translated
from antex.sse import UsageMeter
from antex.translate.chat_stream import ChatStream
from antex.translate.responses_stream import ResponsesStream
from tests.fake_replies import text_reply

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
