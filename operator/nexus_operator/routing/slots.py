"""In-flight slots: taken by a Route, released by its usage report or by expiry.

A slot whose report never arrives (client crashed, report lost) would pin a backend at its
concurrency cap forever; expiry after a timeout bounds that damage.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import count
from typing import NamedTuple

from nexus_operator.pipeline import BackendRuntime

DEFAULT_SLOT_TIMEOUT = timedelta(seconds=300)


class Slot(NamedTuple):
    cell: BackendRuntime
    backend: tuple[str, str]
    taken_at: datetime
    request_id: str | None


class SlotLedger:
    """Open slots in the order they were taken (dict order), each under its own internal key.

    Request ids come from clients and may repeat: keying by id would let a second Route release
    the first one's live slot. Instead every slot gets a unique key and `_by_id` lists the keys
    taken under each id, so one report releases one slot of its own request and nothing else.
    """

    def __init__(self, timeout: timedelta = DEFAULT_SLOT_TIMEOUT) -> None:
        self.timeout = timeout
        self._slots: dict[int, Slot] = {}
        self._by_id: dict[str, list[int]] = {}
        self._keys = count()

    def __len__(self) -> int:
        return len(self._slots)

    def take(
        self,
        cell: BackendRuntime,
        backend: tuple[str, str],
        *,
        request_id: str | None,
        now: datetime,
    ) -> bool:
        """Take a slot; False when the backend is already at maxConcurrency (another serving
        process filled it after this one's decision looked)."""
        if not cell.try_take():
            return False
        key = next(self._keys)
        self._slots[key] = Slot(cell, backend, now, request_id)
        if request_id is not None:
            self._by_id.setdefault(request_id, []).append(key)
        return True

    def release(self, backend: tuple[str, str], request_id: str | None) -> bool:
        """Release the request's oldest open slot on `backend`; without an id, the backend's
        oldest slot taken without one (else its oldest). A report whose id is unknown, already
        released or expired releases nothing: guessing would free another request's slot and
        let the backend exceed its cap."""
        if request_id is None:
            on_backend = [k for k, s in self._slots.items() if s.backend == backend]
            anonymous = [k for k in on_backend if self._slots[k].request_id is None]
            key = next(iter(anonymous or on_backend), None)
        else:
            candidates = self._by_id.get(request_id, ())
            key = next((k for k in candidates if self._slots[k].backend == backend), None)
        if key is None:
            return False
        _release(self._pop(key))
        return True

    def expire(self, now: datetime) -> int:
        horizon = now - self.timeout
        stale = [k for k, s in self._slots.items() if s.taken_at <= horizon]
        for key in stale:
            _release(self._pop(key))
        return len(stale)

    def _pop(self, key: int) -> Slot:
        slot = self._slots.pop(key)
        if slot.request_id is not None:
            keys = self._by_id[slot.request_id]
            keys.remove(key)
            if not keys:
                del self._by_id[slot.request_id]
        return slot


def _release(slot: Slot) -> None:
    slot.cell.release_slot()
