"""The status writer's queue: objects with status to write, by class, oldest first in a class.

One entry per object. Putting an object again in the class it is in keeps its place (its newer
plan replaces the old one); putting it in another class (a counter update that became a
condition change) moves it to the end of that class, so within a class objects are written in
the order their change reached it. Every operation is O(1), whatever the backlog.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class WriteQueue(Generic[K, V]):
    def __init__(self, classes: int) -> None:
        self._classes: list[OrderedDict[K, V]] = [OrderedDict() for _ in range(classes)]
        self._class_of: dict[K, int] = {}

    def put(self, key: K, value: V, *, priority: int) -> None:
        current = self._class_of.get(key)
        if current is not None and current != priority:
            del self._classes[current][key]
        self._classes[priority][key] = value
        self._class_of[key] = priority

    def get(self, key: K) -> V | None:
        current = self._class_of.get(key)
        return None if current is None else self._classes[current][key]

    def discard(self, key: K) -> None:
        current = self._class_of.pop(key, None)
        if current is not None:
            del self._classes[current][key]

    def pop(self, order: Sequence[int]) -> tuple[K, int, V] | None:
        """The oldest entry of the first class in `order` that has one (None: empty)."""
        for priority in order:
            entries = self._classes[priority]
            if entries:
                key, value = entries.popitem(last=False)
                del self._class_of[key]
                return key, priority, value
        return None

    def count(self, priority: int) -> int:
        return len(self._classes[priority])

    def keys(self, priority: int) -> list[K]:
        """The keys of one class, in the order they would be written."""
        return list(self._classes[priority])

    def __len__(self) -> int:
        return len(self._class_of)

    def __contains__(self, key: object) -> bool:
        return key in self._class_of
