"""/v1/responses: the OpenAI Responses API, translated to Messages, and its stored responses.

POST keeps each finished response unless the request says "store": false (OpenAI's default is to
store), so a client may continue with `previous_response_id` (the stored conversation is replayed
upstream as Messages: Anthropic bills it as input, and it is metered so) or point at any stored
item with {"type": "item_reference", "id": …}. GET and DELETE /v1/responses/{id} and GET
/v1/responses/{id}/input_items read and drop them. Every id is the key's own: another key's
answer 404 exactly like ids that never existed.
"""
from __future__ import annotations

from aiohttp import web

from antex import gateway, prepare
from antex.appkeys import ADMISSION, RESPONSES
from antex.auth import KeyRecord
from antex.errors import AntexError
from antex.routes import expect
from antex.routes.translated import Door, handle
from antex.prepare import Recalled
from antex.translate.response_state import PageError, list_page, page_params
from antex.translate.responses import custom_tool_names, messages_to_response
from antex.translate.responses_stream import ResponsesStream

ENDPOINT = "/v1/responses"
KEPT_STATUSES = ("completed", "incomplete")  # a failed response has nothing to continue from


async def recall(request: web.Request, key: KeyRecord, wanted: tuple[str | None, list[str]]) -> tuple[Recalled, list[str]]:
    """The stored items and conversation a body refers to (its previous_response_id and item
    references), for the second run of its job; and the ids of the conversation it continues."""
    previous, references = wanted
    responses = request.app[RESPONSES]
    found: dict = {}
    if references:
        found = await responses.items(key.id, references)
        missing = next((ref for ref in references if ref not in found), None)
        if missing is not None:
            raise AntexError("not_found_error", f"Item with id {missing!r} not found: it was never stored for this key, "
                             f"or was deleted or expired. Send the item itself instead.", param="input")
    if not previous:
        return Recalled(found, None), []
    conversation = await responses.conversation(key.id, previous)
    if conversation is None:
        raise _response_not_found(previous, "previous_response_id", continued=True)
    return Recalled(found, conversation.items), conversation.response_ids


def keep(request: web.Request, key: KeyRecord, items: list[tuple[str, str]], continues: list[str], final: dict) -> None:
    if final.get("status") in KEPT_STATUSES:
        request.app[RESPONSES].keep(key.id, final, items, continues)


DOOR = Door(
    endpoint=ENDPOINT,
    job=prepare.responses,
    to_response=lambda message, body, model, created: messages_to_response(
        message, request=body, custom_tools=custom_tool_names(body), created=created),
    new_stream=lambda body, model, created: ResponsesStream(request=body, custom_tools=custom_tool_names(body),
                                                            created=created),
    recall=recall,
    keep=keep,
)


def setup(app: web.Application) -> None:
    app.router.add_post(ENDPOINT, create_response, expect_handler=expect)
    app.router.add_get(ENDPOINT + "/{response_id}", get_response, expect_handler=expect)
    app.router.add_delete(ENDPOINT + "/{response_id}", delete_response, expect_handler=expect)
    app.router.add_get(ENDPOINT + "/{response_id}/input_items", list_input_items, expect_handler=expect)


async def create_response(request: web.Request) -> web.StreamResponse:
    return await handle(request, DOOR)


def _caller(request: web.Request) -> KeyRecord:
    key = gateway.authenticate(request)
    request.app[ADMISSION].check_key(key)
    return key


def _response_not_found(response_id: str, param: str, *, continued: bool = False) -> AntexError:
    which = f"Response with id {response_id!r}" + (", or one it continues," if continued else "")
    return AntexError("not_found_error", f"{which} not found: it was never stored for this key (\"store\": false "
                      f"keeps nothing), or was deleted or expired.", param=param)


async def get_response(request: web.Request) -> web.Response:
    key = _caller(request)
    response_id = request.match_info["response_id"]
    found = await request.app[RESPONSES].response(key.id, response_id)
    if found is None:
        raise _response_not_found(response_id, "response_id")
    return web.json_response(found, dumps=gateway.dumps)


async def delete_response(request: web.Request) -> web.Response:
    key = _caller(request)
    response_id = request.match_info["response_id"]
    if not await request.app[RESPONSES].delete(key.id, response_id):
        raise _response_not_found(response_id, "response_id")
    return web.json_response({"id": response_id, "object": "response.deleted", "deleted": True}, dumps=gateway.dumps)


async def list_input_items(request: web.Request) -> web.Response:
    key = _caller(request)
    response_id = request.match_info["response_id"]
    try:
        after, limit, order = page_params(dict(request.query))
    except PageError as exc:
        raise AntexError("invalid_request_error", str(exc), param=exc.param) from None
    responses = request.app[RESPONSES]
    if await responses.response(key.id, response_id) is None:
        raise _response_not_found(response_id, "response_id")
    items = await responses.input_items(key.id, response_id)
    return web.json_response(list_page(items, after=after, limit=limit, order=order), dumps=gateway.dumps)
