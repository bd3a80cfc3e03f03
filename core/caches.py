"""A thread-safe LRU cache bounded by bytes, for the shared caches of the library
(prompt answers in core.sam.segmenter, per-image analyses in core.analysis; the segmenter's
image embeddings use it with a size of 1 each, a bound by count)."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

V = TypeVar("V")


class BytesLRU(Generic[V]):
    """Values by key within `max_bytes` (each value's size from `size_of`), least recently
    used first out; a value bigger than the whole budget is not kept. `hits` counts lookups
    that found their value."""

    def __init__(self, max_bytes: int, size_of: Callable[[V], int]):
        self.max_bytes = max_bytes
        self.size_of = size_of
        self._entries: OrderedDict[Hashable, V] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
                self.hits += 1
            return value

    def put(self, key: Hashable, value: V) -> bool:
        """Keep `value`; False when it is bigger than the budget (not kept)."""
        size = self.size_of(value)
        if size > self.max_bytes:
            return False
        with self._lock:
            old = self._entries.pop(key, None)
            self._bytes += size - (self.size_of(old) if old is not None else 0)
            self._entries[key] = value
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= self.size_of(dropped)
        return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
