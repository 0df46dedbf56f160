"""A cache of values derived from immutable objects, keyed by the object's identity.

Snapshot objects (BackendView, BackendRef) are frozen and replaced, never edited, so what is
derived from one (its printable BackendRef, its encoded response bytes) can be kept for as long
as the object lives. They are not hashable cheaply (or at all), hence identity: an entry keeps
its object alive so its id cannot be reused, and the whole cache is dropped once it holds more
than `limit` entries (replaced objects then stop being referenced).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class IdentityCache(Generic[K, V]):
    __slots__ = ("_derive", "_entries", "_limit")

    def __init__(self, derive: Callable[[K], V], *, limit: int = 16_384) -> None:
        self._derive = derive
        self._entries: dict[int, tuple[K, V]] = {}
        self._limit = limit

    def __call__(self, key: K) -> V:
        entry = self._entries.get(id(key))
        if entry is not None and entry[0] is key:
            return entry[1]
        value = self._derive(key)
        if len(self._entries) >= self._limit:
            self._entries.clear()
        self._entries[id(key)] = (key, value)
        return value

    def __len__(self) -> int:
        return len(self._entries)
