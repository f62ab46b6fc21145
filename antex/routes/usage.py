"""GET /v1/usage and /v1/usage/activity: the caller's windows as percentages and times."""
from __future__ import annotations

from aiohttp import web

from antex import gateway
from antex.appkeys import ACTIVITY, ADMISSION, CLOCK, LEDGER
from antex.report import activity_body, usage_body
from antex.routes import expect

NO_STORE = {"cache-control": "no-store"}  # a person's usage is live and private


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/usage", usage, expect_handler=expect)
    app.router.add_get("/v1/usage/activity", activity, expect_handler=expect)


async def usage(request: web.Request) -> web.Response:
    key = gateway.authenticate(request)
    request.app[ADMISSION].check_key(key)
    state = await request.app[LEDGER].state(key.id)
    body = usage_body(name=key.row.name, prefix=key.row.prefix, plan=key.row.plan, limits=key.limits,
                      windows=(state.five_hour, state.seven_day), now=request.app[CLOCK]())
    return web.json_response(body, dumps=gateway.dumps, headers=NO_STORE)


async def activity(request: web.Request) -> web.Response:
    key = gateway.authenticate(request)
    request.app[ADMISSION].check_key(key)
    per_window = await request.app[ACTIVITY].per_window(key.id)
    body = activity_body(per_window=per_window, limits=key.limits, now=request.app[CLOCK]())
    return web.json_response(body, dumps=gateway.dumps, headers=NO_STORE)
