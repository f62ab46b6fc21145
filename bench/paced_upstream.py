"""A slow, stamped stand-in for Anthropic's streaming Messages API, for timing and memory runs.

Every content_block_delta carries, as its text, the CLOCK_MONOTONIC nanoseconds at which the
upstream wrote it, so a client on this machine can tell exactly how long each event took to
cross the proxy. Events are paced `--delay-s` apart, so streams stay open as long as needed:

    event: content_block_delta
    data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"81234567890123"}}

    python -m bench.paced_upstream --port 0 --events 40 --delay-s 0.25
"""
from __future__ import annotations

import argparse
import asyncio
import time

import orjson
from aiohttp import web

from bench.processes import serve_until_stopped

USAGE = {"input_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1}
EVENTS = web.AppKey("events", int)
DELAY_S = web.AppKey("delay_s", float)


def frame(event: str, data: dict) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


HEAD = (frame("message_start", {"type": "message_start", "message": {
            "id": "msg_paced", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6", "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": USAGE}})
        + frame("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "text", "text": ""}}))
DELTA_START = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"'
DELTA_END = b'"}}\n\n'


def tail(events: int) -> bytes:
    usage = {**USAGE, "output_tokens": events}
    return (frame("content_block_stop", {"type": "content_block_stop", "index": 0})
            + frame("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                      "usage": usage})
            + frame("message_stop", {"type": "message_stop"}))


async def messages(request: web.Request) -> web.StreamResponse:
    await request.read()
    events, delay_s = request.app[EVENTS], request.app[DELAY_S]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8", "request-id": "req_paced"})
    await response.prepare(request)
    await response.write(HEAD)
    try:
        for _ in range(events):
            await asyncio.sleep(delay_s)
            await response.write(DELTA_START + str(time.monotonic_ns()).encode() + DELTA_END)
        await response.write(tail(events))
    except ConnectionResetError:
        pass
    return response


async def serve(host: str, port: int, events: int, delay_s: float) -> None:
    app = web.Application()
    app[EVENTS], app[DELAY_S] = events, delay_s
    app.router.add_post("/v1/messages", messages)
    await serve_until_stopped(app, host, port, backlog=4096)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.paced_upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--delay-s", type=float, default=0.25)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.events, args.delay_s))


if __name__ == "__main__":
    main()
