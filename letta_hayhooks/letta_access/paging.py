"""
Letta's paginated lists: the items of one page, and every item across pages by `after` cursor.
"""

from __future__ import annotations

from typing import Any


def page_items(page: Any) -> list[Any]:
    """The items of one page, whether letta-client returned a page object or a plain list."""
    return list(page if isinstance(page, list) else getattr(page, "items", page))


# Pages are followed by cursor; a server that ignores the cursor must not make us loop forever.
_MAX_PAGES = 200


class _Pages:
    """The state of one walk over a paginated list: the items so far and the cursor of the next page."""

    def __init__(self, limit: int, params: dict[str, Any]) -> None:
        self.limit = limit
        self.params = params
        self.items: list[Any] = []
        self.seen: set[str] = set()
        self.after: str | None = None

    def request(self) -> dict[str, Any]:
        """The arguments of the next page's call."""
        return {"limit": self.limit, **({"after": self.after} if self.after else {}), **self.params}

    def take(self, page: Any) -> bool:
        """Keep a page's new items; True when another page may follow."""
        batch = [item for item in page_items(page) if _item_id(item) not in self.seen]
        self.items.extend(batch)
        self.seen.update(_item_id(item) for item in batch)
        if len(batch) < self.limit:
            return False
        self.after = _item_id(batch[-1])
        return True


def _item_id(item: Any) -> str:
    """The id of a listed item: a letta-client object or the plain JSON object of a raw listing."""
    return item["id"] if isinstance(item, dict) else item.id


def all_items(list_page: Any, *, limit: int = 100, **params: Any) -> list[Any]:
    """Every item of a paginated list endpoint (blocking), following `after` cursors."""
    pages = _Pages(limit, params)
    for _ in range(_MAX_PAGES):
        if not pages.take(list_page(**pages.request())):
            break
    return pages.items


async def all_items_async(list_page: Any, *, limit: int = 100, **params: Any) -> list[Any]:
    """Every item of a paginated list endpoint, following `after` cursors."""
    pages = _Pages(limit, params)
    for _ in range(_MAX_PAGES):
        if not pages.take(await list_page(**pages.request())):
            break
    return pages.items
