"""Every object shared on the Application, and every per-request value, declared in one place."""
from __future__ import annotations

import asyncio
from typing import Callable

from aiohttp import web

from antex.activity import ActivityCache
from antex.admission import Admission
from antex.auth import KeyCache, KeyRecord
from antex.config import Config
from antex.ledger import Ledger
from antex.parse_pool import ParsePool
from antex.responses_store import ResponseStore
from antex.request_body import BodyBudget, Held
from antex.store import Store
from antex.upstream.pool import Pool, Upstream

CONFIG = web.AppKey("config", Config)
UPSTREAM_KEYS = web.AppKey("upstream_keys", dict)  # upstream name -> its key (from the environment)
CLOCK = web.AppKey("clock", Callable)
ENVIRON = web.AppKey("environ", dict)  # the environment's proxy settings (HTTPS_PROXY, NO_PROXY, ...)
READER = web.AppKey("reader", Store)
LEDGER = web.AppKey("ledger", Ledger)
KEYS = web.AppKey("keys", KeyCache)
RESPONSES = web.AppKey("responses", ResponseStore)  # stored responses of POST /v1/responses
ADMISSION = web.AppKey("admission", Admission)
POOL = web.AppKey("pool", Pool)  # the upstreams, their connections and health
ACTIVITY = web.AppKey("activity", ActivityCache)
INSTANCE = web.AppKey("instance", str)  # this process's instance id with PostgreSQL; "" with SQLite
CLUSTER = web.AppKey("cluster", object)  # antex.cluster.Cluster, with PostgreSQL only
STOPPING = web.AppKey("stopping", asyncio.Event)  # set when a graceful stop begins
STOP_TIMER = web.AppKey("stop_timer", list)  # [the TimerHandle that cuts what still runs when a stop's grace ends]
HANDLERS = web.AppKey("handlers", set)  # request handlers running, cut with the relays at that point
RELAYS = web.AppKey("relays", set)  # stream relays in flight, awaited on a graceful stop
BODY_BUDGET = web.AppKey("body_budget", BodyBudget)  # request body bytes held in memory
OVER_CAP = web.AppKey("over_cap", set)  # transports of connections past their address's cap (antex/connections.py)
PARSERS = web.AppKey("parsers", ParsePool)  # worker processes for large bodies (antex/prepare.py)

# Per-request values (request[...]), set by the middleware and the handlers.
REQUEST_ID = web.RequestKey("request_id", str)
STARTED = web.RequestKey("started", float)  # perf_counter() when the request arrived
UPSTREAM_S = web.RequestKey("upstream_s", float)  # seconds waiting on the upstream, excluded from overhead
KEY = web.RequestKey("key", KeyRecord)  # the caller's key, once authenticated
WINDOWS = web.RequestKey("windows", tuple)  # the caller's window states, once admitted
MAX_TOKENS_SENT = web.RequestKey("max_tokens_sent", int)  # set when max_tokens was lowered to the plan's cap
UPSTREAM = web.RequestKey("upstream", Upstream)  # the upstream that answered
BODY_HELD = web.RequestKey("body_held", Held)  # the request's share of the body budget
