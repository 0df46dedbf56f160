"""In-flight counters in shared memory: one int32 row per backend incarnation, one lock.

Rows are handed out by the control process (`RowAllocator`); every serving worker and the
control process bind their BackendRuntime cells to the same row, so `maxConcurrency` holds for
the sum over all workers and the status writer reads the total. Taking a slot is a
compare-and-increment under the lock (well under a microsecond); reads need no lock.
"""

from __future__ import annotations

import ctypes
import multiprocessing
from multiprocessing.context import SpawnContext
from typing import Any

ROWS = 1 << 18  # 1 MiB of int32: distinct Backend incarnations one replica can see before reuse


class SharedCounters:
    """Created in the control process, passed to each worker at spawn."""

    def __init__(self, context: SpawnContext, rows: int = ROWS) -> None:
        self.rows = rows
        self._array: Any = context.RawArray(ctypes.c_int32, rows)
        self._lock: Any = context.Lock()
        self._view = _int32_view(self._array)

    def __getstate__(self) -> dict[str, Any]:
        """Crosses the spawn with the shared array and lock; the view is rebuilt on arrival."""
        return {"rows": self.rows, "_array": self._array, "_lock": self._lock}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._view = _int32_view(self._array)

    @property
    def values(self) -> memoryview:
        """The rows as int32, read without the lock (an aligned int32 is read whole): the hot
        path of every capacity check and score, so a memoryview rather than ctypes indexing."""
        return self._view

    def value(self, row: int) -> int:
        value: int = self._view[row]
        return value

    def try_take(self, row: int, cap: int | None) -> bool:
        view = self._view
        with self._lock:
            value = view[row]
            if cap is not None and value >= cap:
                return False
            view[row] = value + 1
            return True

    def release(self, row: int) -> None:
        view = self._view
        with self._lock:
            value = view[row]
            if value > 0:
                view[row] = value - 1


def _int32_view(array: Any) -> memoryview:
    return memoryview(array).cast("B").cast("i")


class RowAllocator:
    """One row per Backend incarnation: a deleted Backend's row is retired, not reused at once,
    because slots of the old incarnation may still be released into it. Retired rows are
    reused only when fresh ones run out, and only once back at zero."""

    def __init__(self, counters: SharedCounters) -> None:
        self._counters = counters
        self._next = 0
        self._retired: list[int] = []
        self.rows: dict[tuple[str, str], int] = {}

    def row_of(self, key: tuple[str, str]) -> int:
        row = self.rows.get(key)
        if row is None:
            row = self._allocate()
            self.rows[key] = row
        return row

    def retire(self, key: tuple[str, str]) -> None:
        row = self.rows.pop(key, None)
        if row is not None:
            self._retired.append(row)

    def _allocate(self) -> int:
        if self._next < self._counters.rows:
            self._next += 1
            return self._next - 1
        for index, row in enumerate(self._retired):
            if self._counters.value(row) == 0:
                return self._retired.pop(index)
        raise RuntimeError(f"all {self._counters.rows} in-flight counter rows are in use")


def spawn_context() -> SpawnContext:
    """Workers are spawned, never forked: the control process runs threads (grpc, kopf)."""
    return multiprocessing.get_context("spawn")
