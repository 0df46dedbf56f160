"""Registry: the mutable holder the operator feeds; readers take `.snapshot` with one read."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from nexus_operator.api import Backend, HealthState, RoutingPolicy
from nexus_operator.pipeline import BackendView, RuntimeState

from .credentials import CredentialStore
from .policies import CompiledPolicy
from .snapshot import Key, NamespaceSnapshot, RegistrySnapshot

log = logging.getLogger(__name__)
Model = TypeVar("Model", Backend, RoutingPolicy)

Listener = Callable[[RegistrySnapshot], None]


@dataclass(frozen=True, slots=True)
class RegistryChange:
    """One write to a registry, as data: what a replica of it needs to apply the same write.

    `full` marks a rebuild from complete lists: it carries only what differs from the registry
    before it (objects new or changed, keys gone), so its size follows what changed.
    """

    backends: tuple[Backend, ...] = ()
    policies: tuple[RoutingPolicy, ...] = ()
    deleted_backends: tuple[Key, ...] = ()
    deleted_policies: tuple[Key, ...] = ()
    full: bool = False


ChangeListener = Callable[[RegistryChange], None]


class Registry:
    """Copy-on-write registry. Writers (kopf handlers) run one at a time on the event loop;
    every write that changes something publishes a new immutable snapshot and notifies
    listeners. A write costs work proportional to what it changes: only the namespaces it
    touches get a new NamespaceSnapshot, built from the previous one."""

    def __init__(self) -> None:
        self.runtime = RuntimeState()
        # Upstream credentials by backend: filled by the operator (or `serve --from-dir`) from
        # the Secrets credentialsSecretRef names, read by the gateway and the health prober.
        self.credentials = CredentialStore(self.runtime)
        self.synced = False
        self._snapshot = RegistrySnapshot.empty()
        self._listeners: list[Listener] = []
        self._change_listeners: list[ChangeListener] = []
        # Snapshots published so far: a write (or resync) that changes nothing publishes none.
        self.publishes = 0

    @property
    def snapshot(self) -> RegistrySnapshot:
        return self._snapshot

    def add_listener(self, callback: Listener) -> None:
        self._listeners.append(callback)

    def add_change_listener(self, callback: ChangeListener) -> None:
        """Called with every write as a RegistryChange, after its snapshot is published."""
        self._change_listeners.append(callback)

    def remove_change_listener(self, callback: ChangeListener) -> None:
        self._change_listeners.remove(callback)

    def apply(self, change: RegistryChange) -> None:
        """Apply a change taken from another registry (a serving worker mirrors the control's):
        one batch, one snapshot, whether it came from a watch event or a resync."""
        self.update(
            backends=change.backends,
            policies=change.policies,
            deleted_backends=change.deleted_backends,
            deleted_policies=change.deleted_policies,
            full=change.full,
        )

    def upsert_backend(self, backend: Backend) -> None:
        self.update(backends=(backend,))

    def delete_backend(self, namespace: str, name: str) -> None:
        self.update(deleted_backends=((namespace, name),))

    def upsert_policy(self, policy: RoutingPolicy) -> None:
        self.update(policies=(policy,))

    def delete_policy(self, namespace: str, name: str) -> None:
        self.update(deleted_policies=((namespace, name),))

    def replace_all(self, backends: Iterable[Backend], policies: Iterable[RoutingPolicy]) -> None:
        """Make the registry hold exactly these objects (startup, resync after a lost watch),
        applied as the difference from what it holds: a list that matches publishes nothing,
        and a list with one changed object costs what a watch event for it costs."""
        snap = self._snapshot
        by_key = {(b.metadata.namespace, b.metadata.name): b for b in backends}
        policy_map = {(p.metadata.namespace, p.metadata.name): p for p in policies}
        self.update(
            backends=_differing(by_key, snap.backends),
            policies=_differing(policy_map, snap.policies),
            deleted_backends=tuple(snap.backends.keys() - by_key.keys()),
            deleted_policies=tuple(snap.policies.keys() - policy_map.keys()),
            full=True,
        )

    def update(
        self,
        *,
        backends: Iterable[Backend] = (),
        policies: Iterable[RoutingPolicy] = (),
        deleted_backends: Iterable[Key] = (),
        deleted_policies: Iterable[Key] = (),
        full: bool = False,
    ) -> bool:
        """Apply a batch of writes as one new snapshot; False (nothing published) when the batch
        changes nothing. Only the namespaces it touches get a new NamespaceSnapshot, whose
        journal records what changed; a namespace's policies are recompiled only when one of
        them changed. Change listeners get the batch as a RegistryChange (`full` passed on)."""
        snap = self._snapshot
        upserts, new_policies = tuple(backends), tuple(policies)
        gone_backends: list[Key] = []
        gone_policies: list[Key] = []
        backend_map: dict[Key, Backend] | None = None
        views: dict[str, list[BackendView]] = {}
        removed: dict[str, list[str]] = {}
        for key in deleted_backends:
            if key in snap.backends:
                backend_map = backend_map if backend_map is not None else dict(snap.backends)
                if backend_map.pop(key, None) is not None:
                    removed.setdefault(key[0], []).append(key[1])
                    gone_backends.append(key)
        for backend in upserts:
            view = BackendView.from_api(backend)
            self._ensure_runtime(view)
            backend_map = backend_map if backend_map is not None else dict(snap.backends)
            backend_map[view.key] = backend
            views.setdefault(view.namespace, []).append(view)
        policy_map: dict[Key, RoutingPolicy] | None = None
        policy_spaces: set[str] = set()
        for key in deleted_policies:
            if key in snap.policies:
                policy_map = policy_map if policy_map is not None else dict(snap.policies)
                if policy_map.pop(key, None) is not None:
                    policy_spaces.add(key[0])
                    gone_policies.append(key)
        for policy in new_policies:
            policy_map = policy_map if policy_map is not None else dict(snap.policies)
            policy_map[(policy.metadata.namespace, policy.metadata.name)] = policy
            policy_spaces.add(policy.metadata.namespace)
        touched = views.keys() | removed.keys() | policy_spaces
        if not touched:
            return False
        spaces = dict(snap.namespaces)
        for namespace in touched:
            compiled = None
            if namespace in policy_spaces:
                assert policy_map is not None
                compiled = _compiled(snap, namespace, policies=policy_map)
            spaces[namespace] = snap.namespace(namespace).with_changes(
                upserts=views.get(namespace, ()),
                deletes=removed.get(namespace, ()),
                policies=compiled,
            )
        self._publish(
            backends=backend_map if backend_map is not None else dict(snap.backends),
            policies=policy_map if policy_map is not None else dict(snap.policies),
            namespaces=spaces,
        )
        if self._change_listeners:
            self._changed(
                RegistryChange(
                    backends=upserts,
                    policies=new_policies,
                    deleted_backends=tuple(gone_backends),
                    deleted_policies=tuple(gone_policies),
                    full=full,
                )
            )
        return True

    def _changed(self, change: RegistryChange) -> None:
        for listener in list(self._change_listeners):
            try:
                listener(change)
            except Exception:
                log.exception("registry change listener %r failed", listener)

    def mark_unprobed_healthy(self) -> int:
        """Count every backend not probed yet (health Unknown) as Healthy; how many changed.
        For library and test use, where no HealthProber runs: the operator and `serve` probe."""
        changed = 0
        for key in self._snapshot.backends:
            cell = self.runtime.backend(*key)
            if cell.health_state is HealthState.UNKNOWN:
                cell.set_assumed_healthy()
                changed += 1
        return changed

    def _ensure_runtime(self, view: BackendView) -> None:
        cell = self.runtime.backend(view.namespace, view.name)
        cell.max_concurrency = view.max_concurrency
        if not view.health_check_enabled:
            cell.set_assumed_healthy()

    def _publish(
        self,
        *,
        backends: dict[Key, Backend],
        policies: dict[Key, RoutingPolicy],
        namespaces: dict[str, NamespaceSnapshot],
    ) -> None:
        snapshot = RegistrySnapshot(
            backends=backends,
            policies=policies,
            namespaces=namespaces,
            version=self._snapshot.version + 1,
            owned=True,
        )
        self._snapshot = snapshot
        self.publishes += 1
        for listener in list(self._listeners):
            try:
                listener(snapshot)
            except Exception:
                log.exception("registry listener %r failed", listener)


def _compiled(
    snap: RegistrySnapshot, namespace: str, *, policies: Mapping[Key, RoutingPolicy]
) -> list[CompiledPolicy]:
    """The namespace's compiled policies; an unchanged policy keeps its compiled object, so
    readers can tell by identity which policies changed."""
    held = {p.name: p for p in snap.namespace(namespace).policies}
    found = []
    for key, policy in policies.items():
        if key[0] != namespace:
            continue
        kept = held.get(key[1])
        unchanged = kept is not None and snap.policies.get(key) is policy
        found.append(kept if unchanged and kept is not None else CompiledPolicy.compile(policy))
    return found


def _differing(new: Mapping[Key, Model], old: Mapping[Key, Model]) -> tuple[Model, ...]:
    """Objects of `new` that `old` lacks or holds differently (identity is checked first)."""
    found = []
    for key, obj in new.items():
        held = old.get(key)
        if held is None or (held is not obj and held != obj):
            found.append(obj)
    return tuple(found)
