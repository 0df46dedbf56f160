"""The status writer's queue: objects with status to write, by class, oldest first in a class.

One entry per object. Putting an object again in the class it is in keeps its place (its newer
plan replaces the old one); putting it in another class (a counter update that became a
condition change) moves it to the end of that class, so within a class objects are written in
the order their change reached it. Every operation is O(1), whatever the backlog; so is the age of
the oldest entry of a class (the metric operators alert on).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class WriteQueue(Generic[K, V]):
    def __init__(self, classes: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        # Per class: key -> (when it entered the class, value), oldest first.
        self._classes: list[OrderedDict[K, tuple[float, V]]] = [
            OrderedDict() for _ in range(classes)
        ]
        self._class_of: dict[K, int] = {}
        self._clock = clock

    def put(self, key: K, value: V, *, priority: int) -> None:
        current = self._class_of.get(key)
        entries = self._classes[priority]
        if current == priority:
            entries[key] = (entries[key][0], value)
            return
        if current is not None:
            del self._classes[current][key]
        entries[key] = (self._clock(), value)
        self._class_of[key] = priority

    def get(self, key: K) -> V | None:
        current = self._class_of.get(key)
        return None if current is None else self._classes[current][key][1]

    def discard(self, key: K) -> None:
        current = self._class_of.pop(key, None)
        if current is not None:
            del self._classes[current][key]

    def pop(self, order: Sequence[int]) -> tuple[K, int, V] | None:
        """The oldest entry of the first class in `order` that has one (None: empty)."""
        for priority in order:
            entries = self._classes[priority]
            if entries:
                key, (_, value) = entries.popitem(last=False)
                del self._class_of[key]
                return key, priority, value
        return None

    def count(self, priority: int) -> int:
        return len(self._classes[priority])

    def oldest_age_s(self, priority: int) -> float:
        """Seconds the oldest entry of a class has waited in it (0 when it is empty)."""
        entries = self._classes[priority]
        if not entries:
            return 0.0
        return max(0.0, self._clock() - next(iter(entries.values()))[0])

    def keys(self, priority: int) -> list[K]:
        """The keys of one class, in the order they would be written."""
        return list(self._classes[priority])

    def __len__(self) -> int:
        return len(self._class_of)

    def __contains__(self, key: object) -> bool:
        return key in self._class_of
