"""POST /v1/chat/completions: OpenAI Chat Completions, translated to Messages and back."""
from __future__ import annotations

from aiohttp import web

from antex import prepare

from antex.routes import expect
from antex.routes.translated import Door, handle
from antex.translate.chat import ChatStream, messages_to_chat

ENDPOINT = "/v1/chat/completions"


def _include_usage(body: dict) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


DOOR = Door(
    endpoint=ENDPOINT,
    job=prepare.chat_completions,
    to_response=lambda message, body, model, created: messages_to_chat(message, model=model, created=created),
    new_stream=lambda body, model, created: ChatStream(model=model, created=created, include_usage=_include_usage(body)),
)


def setup(app: web.Application) -> None:
    app.router.add_post(ENDPOINT, chat_completions, expect_handler=expect)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await handle(request, DOOR)
