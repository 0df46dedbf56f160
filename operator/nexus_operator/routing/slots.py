"""In-flight slots: taken by a Route, released by its usage report or by expiry.

A slot whose report never arrives (client crashed, report lost) would pin a backend at its
concurrency cap forever; expiry after a timeout bounds that damage.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import count
from typing import NamedTuple

from nexus_operator.control import BackendRuntime

DEFAULT_SLOT_TIMEOUT = timedelta(seconds=300)


class Slot(NamedTuple):
    cell: BackendRuntime
    backend: tuple[str, str]
    taken_at: datetime


class SlotLedger:
    """Open slots in the order they were taken (dict order), keyed by request id."""

    def __init__(self, timeout: timedelta = DEFAULT_SLOT_TIMEOUT) -> None:
        self.timeout = timeout
        self._slots: dict[str, Slot] = {}
        self._anonymous = count()

    def __len__(self) -> int:
        return len(self._slots)

    def take(
        self, cell: BackendRuntime, backend: tuple[str, str], request_id: str | None, now: datetime
    ) -> None:
        key = request_id if request_id is not None else f"\0anonymous-{next(self._anonymous)}"
        previous = self._slots.pop(key, None)
        if previous is not None:
            _release(previous)
        cell.in_flight += 1
        self._slots[key] = Slot(cell, backend, now)

    def release(self, backend: tuple[str, str], request_id: str | None) -> bool:
        """Release the request's slot, or the backend's oldest when the id is unknown."""
        slot = self._slots.get(request_id) if request_id is not None else None
        key = request_id
        if slot is None or slot.backend != backend:
            key = next((k for k, s in list(self._slots.items()) if s.backend == backend), None)
            slot = self._slots.get(key) if key is not None else None
        if slot is None or key is None:
            return False
        del self._slots[key]
        _release(slot)
        return True

    def expire(self, now: datetime) -> int:
        horizon = now - self.timeout
        stale = [k for k, s in list(self._slots.items()) if s.taken_at <= horizon]
        released = [slot for key in stale if (slot := self._slots.pop(key, None)) is not None]
        for slot in released:
            _release(slot)
        return len(released)


def _release(slot: Slot) -> None:
    slot.cell.in_flight = max(0, slot.cell.in_flight - 1)
