"""In-flight slots: taken by a Route, released by its usage report or by expiry.

A slot whose report never arrives (client crashed, report lost) would pin a backend at its
concurrency cap forever; expiry after a timeout bounds that damage.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import count

from nexus_operator.pipeline import BackendRuntime

DEFAULT_SLOT_TIMEOUT = timedelta(seconds=300)


# An open slot: (cell number, backend key, taken at, request id). A plain tuple of atoms, so
# the collector stops tracking it: a Route-only client (no usage reports) leaves one per call
# open until expiry, tens of thousands under load, and tracked they made every full
# collection walk them all (pauses of tens of ms in a serving worker).
_Slot = tuple[int, tuple[str, str], datetime, str | None]


class SlotLedger:
    """Open slots in the order they were taken (dict order), each under its own internal key.

    Request ids come from clients and may repeat: keying by id would let a second Route release
    the first one's live slot. Instead every slot gets a unique key and `_by_id` lists the keys
    taken under each id, so one report releases one slot of its own request and nothing else.
    The cells slots were taken on are held once each (`_cells`, by number), not per slot.
    """

    def __init__(self, timeout: timedelta = DEFAULT_SLOT_TIMEOUT) -> None:
        self.timeout = timeout
        self._slots: dict[int, _Slot] = {}
        self._by_id: dict[str, tuple[int, ...]] = {}
        self._keys = count()
        self._cells: dict[int, BackendRuntime] = {}
        self._open: dict[int, int] = {}  # cell number → its open slots

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
        number = id(cell)  # unique while held here
        self._cells[number] = cell
        self._open[number] = self._open.get(number, 0) + 1
        self._slots[key] = (number, backend, now, request_id)
        if request_id is not None:
            self._by_id[request_id] = (*self._by_id.get(request_id, ()), key)
        return True

    def release(self, backend: tuple[str, str], request_id: str | None) -> bool:
        """Release the request's oldest open slot on `backend`; without an id, the backend's
        oldest slot taken without one (else its oldest). A report whose id is unknown, already
        released or expired releases nothing: guessing would free another request's slot and
        let the backend exceed its cap."""
        slots = self._slots
        if request_id is None:
            on_backend = [k for k, s in slots.items() if s[1] == backend]
            anonymous = [k for k in on_backend if slots[k][3] is None]
            key = next(iter(anonymous or on_backend), None)
        else:
            candidates = self._by_id.get(request_id, ())
            key = next((k for k in candidates if slots[k][1] == backend), None)
        if key is None:
            return False
        self._release(key)
        return True

    def expire(self, now: datetime) -> int:
        horizon = now - self.timeout
        stale = [k for k, s in self._slots.items() if s[2] <= horizon]
        for key in stale:
            self._release(key)
        return len(stale)

    def _release(self, key: int) -> None:
        number, _, _, request_id = self._slots.pop(key)
        if request_id is not None:
            keys = tuple(k for k in self._by_id[request_id] if k != key)
            if keys:
                self._by_id[request_id] = keys
            else:
                del self._by_id[request_id]
        left = self._open[number] - 1
        cell = self._cells[number]
        if left:
            self._open[number] = left
        else:
            del self._open[number], self._cells[number]
        cell.release_slot()
