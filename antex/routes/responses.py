"""POST /v1/responses: the OpenAI Responses API as Codex CLI speaks it, translated to Messages."""
from __future__ import annotations

from aiohttp import web

from antex.routes import expect
from antex.routes.translated import Door, handle
from antex.translate.responses import custom_tool_names, messages_to_response, responses_to_messages
from antex.translate.responses_stream import ResponsesStream

ENDPOINT = "/v1/responses"

DOOR = Door(
    endpoint=ENDPOINT,
    to_messages=lambda body, default_max: responses_to_messages(body, default_max_tokens=default_max,
                                                                thinking_supported=True),
    to_response=lambda message, body, model, created: messages_to_response(
        message, request=body, custom_tools=custom_tool_names(body), created=created),
    new_stream=lambda body, model, created: ResponsesStream(request=body, custom_tools=custom_tool_names(body),
                                                            created=created),
)


def setup(app: web.Application) -> None:
    app.router.add_post(ENDPOINT, create_response, expect_handler=expect)


async def create_response(request: web.Request) -> web.StreamResponse:
    return await handle(request, DOOR)
