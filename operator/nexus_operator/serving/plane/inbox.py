"""A serving worker's queue of messages from the control process, taken in bounded steps.

The worker applies what arrives a loop turn at a time, within a budget, so a large registry
change (the initial state, a re-list, a burst of watch events) is applied in slices with the
loop's other callbacks (decisions) running between them, instead of holding the loop for the
whole batch. Messages keep their order: one queued behind a change (health, `Serving`) is taken
only after every slice of it. Consecutive changes to distinct objects are folded into one
change (one registry write, one snapshot) up to the same budget; a change touching an object
already in the fold starts the next one, so the result is always what applying them one by one
gives.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import TypeVar

from ...api import Backend, RoutingPolicy
from ...routing import RegistryChange
from . import wire

Key = tuple[str, str]
Item = TypeVar("Item", Backend, RoutingPolicy, Key)


def change_size(change: RegistryChange) -> int:
    """Registry objects a change writes or deletes (at least 1)."""
    return max(
        1,
        len(change.backends)
        + len(change.policies)
        + len(change.deleted_backends)
        + len(change.deleted_policies),
    )


class Inbox:
    """Messages in arrival order; `take` hands out the next step of work within a budget."""

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: deque[object] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def extend(self, messages: Iterable[object]) -> None:
        self._queue.extend(messages)

    def take(self, objects: int) -> object:
        """The next message; a `wire.Change` holds at most `objects` registry objects (a larger
        one is split, the rest staying first in line), folded with the changes behind it while
        they touch other objects and fit. The queue must not be empty."""
        queue = self._queue
        head = queue.popleft()
        if not isinstance(head, wire.Change):
            return head
        limit = max(1, objects)
        if change_size(head.change) > limit:
            first, rest = split(head, limit)
            queue.appendleft(rest)
            return first
        fold = _Fold(head)
        while queue:
            following = queue[0]
            if not isinstance(following, wire.Change) or not fold.admits(following, limit):
                break
            fold.add(following)
            queue.popleft()
        return fold.change()


def split(message: wire.Change, count: int) -> tuple[wire.Change, wire.Change]:
    """The first `count` objects of a change and the rest, in the order a registry applies
    them: policies (deleted, then written) before backends (deleted, then written)."""
    change = message.change
    left = count
    deleted_policies, left = _cut(change.deleted_policies, left)
    policies, left = _cut(change.policies, left)
    deleted_backends, left = _cut(change.deleted_backends, left)
    backends, left = _cut(change.backends, left)
    first = RegistryChange(
        backends=backends,
        policies=policies,
        deleted_backends=deleted_backends,
        deleted_policies=deleted_policies,
        full=change.full,
    )
    rest = RegistryChange(
        backends=change.backends[len(backends) :],
        policies=change.policies[len(policies) :],
        deleted_backends=change.deleted_backends[len(deleted_backends) :],
        deleted_policies=change.deleted_policies[len(deleted_policies) :],
        full=change.full,
    )
    return _with_rows(first, message.rows), _with_rows(rest, message.rows)


def _cut(items: tuple[Item, ...], left: int) -> tuple[tuple[Item, ...], int]:
    taken = items[: max(0, left)]
    return taken, left - len(taken)


def _with_rows(change: RegistryChange, rows: dict[Key, int]) -> wire.Change:
    """The change with the counter rows of the backends it writes."""
    keys = (_backend_key(b) for b in change.backends)
    return wire.Change(change, {key: rows[key] for key in keys if key in rows})


class _Fold:
    """Changes to pairwise distinct objects, merged into one."""

    __slots__ = ("_backend_keys", "_parts", "_policy_keys", "_size")

    def __init__(self, first: wire.Change) -> None:
        self._parts = [first]
        self._size = change_size(first.change)
        self._backend_keys, self._policy_keys = _keys(first.change)

    def admits(self, message: wire.Change, limit: int) -> bool:
        if self._size + change_size(message.change) > limit:
            return False
        backends, policies = _keys(message.change)
        return self._backend_keys.isdisjoint(backends) and self._policy_keys.isdisjoint(policies)

    def add(self, message: wire.Change) -> None:
        self._parts.append(message)
        self._size += change_size(message.change)
        backends, policies = _keys(message.change)
        self._backend_keys |= backends
        self._policy_keys |= policies

    def change(self) -> wire.Change:
        parts = self._parts
        if len(parts) == 1:
            return parts[0]
        changes = [part.change for part in parts]
        rows: dict[Key, int] = {}
        for part in parts:
            rows.update(part.rows)
        merged = RegistryChange(
            backends=tuple(b for c in changes for b in c.backends),
            policies=tuple(p for c in changes for p in c.policies),
            deleted_backends=tuple(k for c in changes for k in c.deleted_backends),
            deleted_policies=tuple(k for c in changes for k in c.deleted_policies),
            full=any(c.full for c in changes),
        )
        return wire.Change(merged, rows)


def _keys(change: RegistryChange) -> tuple[set[Key], set[Key]]:
    backends = {_backend_key(b) for b in change.backends}
    backends.update(change.deleted_backends)
    policies = {(p.metadata.namespace, p.metadata.name) for p in change.policies}
    policies.update(change.deleted_policies)
    return backends, policies


def _backend_key(backend: Backend) -> Key:
    meta = backend.metadata
    return (meta.namespace, meta.name)
