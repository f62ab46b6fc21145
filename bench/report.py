"""The bench's one table, and bench/RESULTS.md: every figure next to the bare pass-through's."""
from __future__ import annotations

import datetime
import math
import os
import platform
import re
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


@dataclass
class Row:
    """One line of the table: a measure for the bare proxy and for Antex, and how they compare."""

    measure: str
    bare: str
    antex: str
    compare: str = ""
    target: str = ""
    met: bool | None = None

    @property
    def verdict(self) -> str:
        return {True: "yes", False: "**no**", None: ""}[self.met]


def fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        digits = 0
    return f"{value:,.{digits}f}{unit}"


def ratio(antex: float | None, bare: float | None) -> str:
    return "n/a" if not antex or not bare else times(antex / bare)


def times(value: float) -> str:
    """A ratio, rounded down: 0.847 shows as 0.84×, never as a 0.85× that missed a 0.85 target."""
    return f"{math.floor(round(value * 100, 6)) / 100:.2f}×"


def delta_ms(antex: float | None, bare: float | None) -> str:
    return "n/a" if antex is None or bare is None else f"{antex - bare:+.2f} ms"


def table(sections: list[tuple[str, list[Row]]]) -> str:
    lines = ["| measure | bare pass-through | Antex | Antex vs bare | target | met |", "|---|---:|---:|---:|---|---|"]
    for title, rows in sections:
        lines.append(f"| **{title}** | | | | | |")
        for row in rows:
            lines.append(f"| {row.measure} | {row.bare} | {row.antex} | {row.compare} | {row.target} | {row.verdict} |")
    return "\n".join(lines)


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    try:
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
        wrk = re.sub(r"\s+Copyright.*", "", wrk)
    except (OSError, IndexError):
        wrk = "not installed"
    versions = {}
    for package in ("aiohttp", "uvloop", "orjson", "aiosqlite"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        **versions,
        "sqlite": __import__("sqlite3").sqlite_version,
        "wrk": wrk,
    }


def markdown(sections: list[tuple[str, list[Row]]], notes: list[str], settings: str) -> str:
    info = machine()
    head = [
        "# Antex benchmark results",
        "",
        "Produced by `make bench` (`python -m bench`); every figure is from the same run, and every",
        "comparison is against the bare aiohttp pass-through (`bench/bare_proxy.py`) measured in that run.",
        "Load ratios are the median over rounds of each round's ratio (bare and Antex run back to back in",
        "every round, which goes first alternating), so a slow spell on a shared machine cannot tilt them;",
        "absolute figures are totals.",
        "",
        f"- Date: {info['date']}",
        f"- Machine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}",
        f"- Python {info['python']}, aiohttp {info['aiohttp']}, uvloop {info['uvloop']}, orjson {info['orjson']}, "
        f"aiosqlite {info['aiosqlite']}, SQLite {info['sqlite']}",
        f"- Load generator: {info['wrk']} (one thread) and `bench/probe.py`",
        f"- Settings: {settings}",
        "",
    ]
    return "\n".join(head + [table(sections), "", "## Notes", ""] + [f"- {note}" for note in notes]) + "\n"
