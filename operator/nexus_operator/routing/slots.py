"""In-flight slots: taken by a Route, released by its usage report or by expiry.

A slot whose report never arrives (client crashed, report lost) would pin a backend at its
concurrency cap forever; expiry after a timeout bounds that damage.
"""

from __future__ import annotations

from collections.abc import Collection
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

    Slots are taken in time order, so expiry walks from the oldest and stops at the first one
    still fresh: O(expired), not O(open), every round. Should the clock step back, a slot is
    taken at a time before an older slot's, and the dict is no longer in time order: then
    `_disordered` is set and the next rounds walk every slot, as before, until a walk finds
    the remaining slots in order again. A slot never expires before or after its time.
    """

    def __init__(self, timeout: timedelta = DEFAULT_SLOT_TIMEOUT) -> None:
        self.timeout = timeout
        self._slots: dict[int, _Slot] = {}
        self._by_id: dict[str, tuple[int, ...]] = {}
        self._keys = count()
        self._cells: dict[int, BackendRuntime] = {}
        self._open: dict[int, int] = {}  # cell number → its open slots
        self._latest: datetime | None = None  # taken-at of the newest slot
        self._disordered = False

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
        latest = self._latest
        if latest is None or now >= latest:
            self._latest = now
        else:
            self._disordered = True
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
        """Release every slot taken at or before `now` − timeout."""
        horizon = now - self.timeout
        stale: list[int] = []
        if self._disordered:
            stale = [k for k, s in self._slots.items() if s[2] <= horizon]
        else:
            for key, slot in self._slots.items():
                if slot[2] > horizon:
                    break
                stale.append(key)
        for key in stale:
            self._release(key)
        if self._disordered:
            self._disordered, self._latest = _time_order(self._slots.values())
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


def _time_order(slots: Collection[_Slot]) -> tuple[bool, datetime | None]:
    """(whether the slots are out of time order, the newest taken-at)."""
    latest: datetime | None = None
    for slot in slots:
        if latest is not None and slot[2] < latest:
            return True, max(s[2] for s in slots)
        latest = slot[2]
    return False, latest
