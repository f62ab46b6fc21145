"""antex.server: the app as `antex serve` runs it."""

from __future__ import annotations

import gc
from pathlib import Path

from aiohttp import web

from antex.server import GC_YOUNG_THRESHOLD, server_app, tune_gc
from tests.conftest import build_config
from tests.fake_anthropic import DEFAULT_API_KEY


def test_the_served_app_tunes_the_collector_after_everything_else_started(tmp_path: Path) -> None:
    app = server_app(build_config(tmp_path / "antex.db", "http://127.0.0.1:9"), DEFAULT_API_KEY)
    assert app.on_startup[-1] is tune_gc  # after the cleanup contexts: what they load is frozen too


async def test_tuning_freezes_what_exists_and_collects_young_objects_less_often() -> None:
    threshold = gc.get_threshold()
    try:
        await tune_gc(web.Application())
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *threshold[1:])
    finally:  # the rest of the test run keeps Python's defaults
        gc.unfreeze()
        gc.set_threshold(*threshold)
