"""Watches one CPU for the machine's own stalls: spells in which that CPU ran nothing at all.

On a shared VM the hypervisor sometimes takes a virtual CPU away for a few milliseconds (steal
time). Any event crossing that CPU then arrives late, through the bare pass-through and Antex
alike, so the slowest event of a run measures the VM, not the proxy. This process sleeps 1 ms at
a time, pinned to the CPU it watches, at real-time priority where the kernel allows it, so no
task on that CPU (the proxy included) can delay its wake-up: a wake-up later than LATE_NS means
the CPU was taken from every task (by the hypervisor, or by the kernel's own interrupt work), and
the whole sleep is recorded as a stall.

    python -m bench.stall_watch --out STALLS.json     (pinned by its parent; stops on SIGTERM)

STALLS.json: {"realtime": bool, "ticks": n, "stalls": [[start_ns, end_ns], ...]} in
CLOCK_MONOTONIC, the clock the paced upstream stamps its events with.
"""
from __future__ import annotations

import argparse
import os
import signal
import time
from bisect import bisect_left
from pathlib import Path

import orjson

TICK_S = 0.001
LATE_NS = 500_000


def stalls_crossed(events: list[list[int]], stalls: list[list[int]]) -> list[bool]:
    """For each (sent_ns, arrived_ns) event, whether any (start_ns, end_ns) stall overlaps it."""
    stalls = sorted(stalls)
    starts = [start for start, _ in stalls]
    longest = max((end - start for start, end in stalls), default=0)
    crossed = []
    for sent, arrived in events:
        # a stall overlaps when it starts before the arrival and ends after the send; stalls are
        # sorted by start, so only those starting within `longest` before the send can still be open
        index = bisect_left(starts, sent - longest)
        hit = False
        while index < len(stalls) and stalls[index][0] <= arrived:
            if stalls[index][1] >= sent:
                hit = True
                break
            index += 1
        crossed.append(hit)
    return crossed


def clear_transits_ms(events: list[list[int]], stalls: list[list[int]]) -> list[float]:
    """Transit times in ms of the (sent_ns, arrived_ns) events that no stall overlapped."""
    crossed = stalls_crossed(events, stalls)
    return [(arrived - sent) / 1e6 for (sent, arrived), hit in zip(events, crossed) if not hit]


def stalls_within(events: list[list[int]], stalls: list[list[int]]) -> int:
    """How many stalls overlap the span from the first event's send to the last one's arrival."""
    if not events:
        return 0
    first, last = min(sent for sent, _ in events), max(arrived for _, arrived in events)
    return sum(1 for start, end in stalls if start <= last and end >= first)


def stop_and_read(watcher, out: Path) -> dict:
    """Stop a running watcher (a bench.processes.Process) and read what it saw."""
    watcher.stop()
    return orjson.loads(out.read_bytes())


def realtime() -> bool:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        return True
    except (PermissionError, AttributeError, OSError):
        return False


def watch(out: Path) -> None:
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    is_realtime = realtime()
    print("watching", flush=True)
    stalls, ticks = [], 0
    expected_ns = int(TICK_S * 1e9)
    while not stopping:
        before = time.monotonic_ns()
        time.sleep(TICK_S)
        after = time.monotonic_ns()
        ticks += 1
        if after - before - expected_ns > LATE_NS:
            stalls.append([before, after])
    out.write_bytes(orjson.dumps({"realtime": is_realtime, "ticks": ticks, "stalls": stalls}))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stall_watch", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    watch(parser.parse_args().out)


if __name__ == "__main__":
    main()
