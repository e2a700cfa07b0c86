"""Following Letta's `after` cursors over every page of a list endpoint, blocking and async."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from letta_hayhooks.letta_access.paging import all_items, all_items_async


def pages_of(ids: list[str], *, ignore_cursor: bool = False):
    """A list endpoint over `ids`; it records the calls it got."""
    calls: list[dict] = []

    def list_page(limit: int, after: str | None = None, **params: object) -> list[SimpleNamespace]:
        calls.append({"limit": limit, "after": after, **params})
        start = 0 if ignore_cursor or after is None else ids.index(after) + 1
        return [SimpleNamespace(id=i) for i in ids[start:start + limit]]

    return list_page, calls


def test_every_page_is_followed_and_params_are_passed_on() -> None:
    list_page, calls = pages_of([f"a{i}" for i in range(7)])
    assert [item.id for item in all_items(list_page, limit=3, tags=["x"])] == [f"a{i}" for i in range(7)]
    assert [call["after"] for call in calls] == [None, "a2", "a5"]
    assert all(call["tags"] == ["x"] and call["limit"] == 3 for call in calls)


def test_a_server_that_ignores_the_cursor_does_not_loop_forever() -> None:
    list_page, calls = pages_of(["a0", "a1", "a2"], ignore_cursor=True)
    assert [item.id for item in all_items(list_page, limit=3)] == ["a0", "a1", "a2"]
    assert len(calls) == 2  # the second page had nothing new


def test_async_twin_gives_the_same_items() -> None:
    list_page, _ = pages_of([f"a{i}" for i in range(5)])

    async def async_page(**kwargs: object) -> list[SimpleNamespace]:
        return list_page(**kwargs)

    items = asyncio.run(all_items_async(async_page, limit=2))
    assert [item.id for item in items] == [f"a{i}" for i in range(5)]
