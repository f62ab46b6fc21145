"""The Responses API's stored state as data: references, kept items, list pages (no server)."""
from __future__ import annotations

import re
import time

import pytest

from antex.translate.response_state import (PageError, list_page, own_items, page_params, referenced_ids, time_ordered,
                                            with_references)


def test_references_are_found_and_replaced_in_place() -> None:
    stored = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "{}"}
    items = [{"type": "message", "role": "user", "content": "hi"}, {"type": "item_reference", "id": "fc_1"},
             {"type": "function_call_output", "call_id": "call_1", "output": "ok"}]
    assert referenced_ids(items) == ["fc_1"]
    assert referenced_ids("just text") == [] and referenced_ids([{"type": "item_reference", "id": 5}]) == []
    assert with_references(items, {"fc_1": stored}) == [items[0], stored, items[2]]


def test_own_items_have_ids_and_openai_shapes() -> None:
    (text,) = own_items("hello")
    assert text["type"] == "message" and text["role"] == "user" and text["id"].startswith("msg_")
    assert text["content"] == [{"type": "input_text", "text": "hello"}]
    output, said, kept = own_items([
        {"type": "function_call_output", "call_id": "c", "output": "x"},
        {"role": "assistant", "content": "earlier"},
        {"type": "message", "id": "msg_given", "role": "user", "content": [{"type": "input_text", "text": "x"}]},
        "not an item",
    ])
    assert output["id"].startswith("fco_") and said["content"] == [{"type": "output_text", "text": "earlier"}]
    assert said["type"] == "message" and kept["id"] == "msg_given"
    assert own_items(None) == [] and own_items(5) == []


@pytest.mark.parametrize("after, limit, order, ids, has_more", [
    (None, 20, "desc", ["e", "d", "c", "b", "a"], False),
    (None, 2, "asc", ["a", "b"], True),
    ("b", 2, "asc", ["c", "d"], True),
    ("d", 2, "asc", ["e"], False),
    ("c", 5, "desc", ["b", "a"], False),
    ("nope", 2, "asc", [], False),
])
def test_list_pages(after: str | None, limit: int, order: str, ids: list[str], has_more: bool) -> None:
    items = [{"id": name} for name in "abcde"]
    page = list_page(items, after=after, limit=limit, order=order)
    assert [item["id"] for item in page["data"]] == ids and page["has_more"] is has_more
    assert page["object"] == "list"
    assert (page["first_id"], page["last_id"]) == ((ids[0], ids[-1]) if ids else (None, None))


@pytest.mark.parametrize("query, expected", [
    ({}, (None, 20, "desc")), ({"limit": "100", "order": "asc", "after": "x"}, ("x", 100, "asc")),
])
def test_page_params(query: dict, expected: tuple) -> None:
    assert page_params(query) == expected


@pytest.mark.parametrize("query, param", [
    ({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "²"}, "limit"), ({"limit": "-1"}, "limit"),
    ({"order": "up"}, "order"),
])
def test_bad_page_params(query: dict, param: str) -> None:
    with pytest.raises(PageError) as bad:
        page_params(query)
    assert bad.value.param == param


def test_kept_ids_grow_with_time() -> None:
    """Stored responses' and items' ids start with the time, so each insert lands at the end of
    the store's indexes (time_ordered); the upstream's own id stays at the end."""
    first = time_ordered("01Abc")
    time.sleep(0.002)
    second = time_ordered("01Abc")
    assert first < second and first.endswith("01Abc") and re.fullmatch(r"[0-9a-f]{11}01Abc", second)
    (item,) = own_items("hello")
    assert re.fullmatch(r"msg_[0-9a-f]{11}[0-9a-f]{32}", item["id"])
