"""GET /v1/models and /v1/models/{id}: the models the key's plan allows.

One body both SDKs parse: Anthropic's fields (type, display_name, created_at, has_more, first_id,
last_id) and OpenAI's (object, created, owned_by) side by side.
"""
from __future__ import annotations

from datetime import datetime, timezone

from aiohttp import web

from antex import gateway
from antex.appkeys import ADMISSION, CONFIG
from antex.catalog import Model
from antex.errors import AntexError
from antex.routes import expect


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/models", list_models, expect_handler=expect)
    app.router.add_get("/v1/models/{model_id}", get_model, expect_handler=expect)


def model_object(model: Model) -> dict:
    released = datetime.strptime(model.created_at, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    return {
        "id": model.id,
        "type": "model",
        "display_name": model.display_name,
        "created_at": released.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "object": "model",
        "created": int(released.timestamp()),
        "owned_by": "anthropic",
    }


async def list_models(request: web.Request) -> web.Response:
    key = gateway.authenticate(request)
    request.app[ADMISSION].check_key(key)
    models = [model_object(m) for m in request.app[CONFIG].models.values() if key.limits.allows(m.id)]
    models.sort(key=lambda m: m["created"], reverse=True)  # newest first, as Anthropic lists them
    body = {"object": "list", "data": models, "has_more": False,
            "first_id": models[0]["id"] if models else None, "last_id": models[-1]["id"] if models else None}
    return web.json_response(body, dumps=gateway.dumps)


async def get_model(request: web.Request) -> web.Response:
    key = gateway.authenticate(request)
    request.app[ADMISSION].check_key(key)
    requested = request.match_info["model_id"]
    model = request.app[CONFIG].resolve_model(requested)
    if model is None or not key.limits.allows(model.id):
        raise AntexError("not_found_error", f"Model {requested!r} is not available with your key. GET /v1/models lists the ones that are.")
    return web.json_response(model_object(model), dumps=gateway.dumps)
