"""A bounded mapping for the in-process caches (sessions, system-prompt blocks, compiled prompts)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

# Entries kept per cache; a forgotten entry is looked up in Letta again, so the bound costs a lookup, not data.
CACHE_SIZE = 10_000


class LRU(OrderedDict):
    """A dict that keeps its `size` most recently remembered entries."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        super().__init__()
        self.size = size

    def remember(self, key: Any, value: Any) -> Any:
        """Store `value` under `key` as the most recent entry, dropping the oldest beyond `size`; returns `value`."""
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
        return value
