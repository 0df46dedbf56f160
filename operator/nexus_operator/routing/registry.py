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
    every write publishes a new immutable snapshot and notifies listeners."""

    def __init__(self) -> None:
        self.runtime = RuntimeState()
        # Upstream credentials by backend: filled by the operator (or `serve --from-dir`) from
        # the Secrets credentialsSecretRef names, read by the gateway and the health prober.
        self.credentials = CredentialStore(self.runtime)
        self.synced = False
        self._snapshot = RegistrySnapshot.empty()
        self._listeners: list[Listener] = []
        self._change_listeners: list[ChangeListener] = []

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
        """Apply a change taken from another registry (a serving worker mirrors the control's)."""
        if change.full:
            snap = self._snapshot
            backends = dict(snap.backends)
            policies = dict(snap.policies)
            for key in change.deleted_backends:
                backends.pop(key, None)
            for key in change.deleted_policies:
                policies.pop(key, None)
            for backend in change.backends:
                backends[(backend.metadata.namespace, backend.metadata.name)] = backend
            for policy in change.policies:
                policies[(policy.metadata.namespace, policy.metadata.name)] = policy
            self.replace_all(backends.values(), policies.values())
            return
        for key in change.deleted_backends:
            self.delete_backend(*key)
        for key in change.deleted_policies:
            self.delete_policy(*key)
        for backend in change.backends:
            self.upsert_backend(backend)
        for policy in change.policies:
            self.upsert_policy(policy)

    def upsert_backend(self, backend: Backend) -> None:
        view = BackendView.from_api(backend)
        self._ensure_runtime(view)
        snap = self._snapshot
        backends = dict(snap.backends)
        backends[view.key] = backend
        spaces = dict(snap.namespaces)
        spaces[view.namespace] = snap.namespace(view.namespace).with_backend(view)
        self._publish(backends=backends, policies=snap.policies, namespaces=spaces)
        self._changed(RegistryChange(backends=(backend,)))

    def delete_backend(self, namespace: str, name: str) -> None:
        snap = self._snapshot
        if (namespace, name) not in snap.backends:
            return
        backends = {k: v for k, v in snap.backends.items() if k != (namespace, name)}
        spaces = dict(snap.namespaces)
        spaces[namespace] = snap.namespace(namespace).without_backend(name)
        self._publish(backends=backends, policies=snap.policies, namespaces=spaces)
        self._changed(RegistryChange(deleted_backends=((namespace, name),)))

    def upsert_policy(self, policy: RoutingPolicy) -> None:
        snap = self._snapshot
        policies = dict(snap.policies)
        policies[(policy.metadata.namespace, policy.metadata.name)] = policy
        self._publish_policies(policies, namespace=policy.metadata.namespace)
        self._changed(RegistryChange(policies=(policy,)))

    def delete_policy(self, namespace: str, name: str) -> None:
        snap = self._snapshot
        if (namespace, name) not in snap.policies:
            return
        policies = {k: v for k, v in snap.policies.items() if k != (namespace, name)}
        self._publish_policies(policies, namespace=namespace)
        self._changed(RegistryChange(deleted_policies=((namespace, name),)))

    def replace_all(self, backends: Iterable[Backend], policies: Iterable[RoutingPolicy]) -> None:
        """Rebuild from a full list (startup or resync after a lost watch)."""
        by_key = {(b.metadata.namespace, b.metadata.name): b for b in backends}
        policy_map = {(p.metadata.namespace, p.metadata.name): p for p in policies}
        views = [BackendView.from_api(b) for b in by_key.values()]
        for view in views:
            self._ensure_runtime(view)
        spaces = {
            ns: _namespace(ns, views, policies=policy_map)
            for ns in {v.namespace for v in views} | {k[0] for k in policy_map}
        }
        before = self._snapshot
        self._publish(backends=by_key, policies=policy_map, namespaces=spaces)
        if self._change_listeners:
            self._changed(
                RegistryChange(
                    backends=_differing(by_key, before.backends),
                    policies=_differing(policy_map, before.policies),
                    deleted_backends=tuple(before.backends.keys() - by_key.keys()),
                    deleted_policies=tuple(before.policies.keys() - policy_map.keys()),
                    full=True,
                )
            )

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

    def _publish_policies(self, policies: dict[Key, RoutingPolicy], *, namespace: str) -> None:
        snap = self._snapshot
        compiled = [CompiledPolicy.compile(p) for k, p in policies.items() if k[0] == namespace]
        spaces = dict(snap.namespaces)
        spaces[namespace] = snap.namespace(namespace).with_policies(compiled)
        self._publish(backends=snap.backends, policies=policies, namespaces=spaces)

    def _ensure_runtime(self, view: BackendView) -> None:
        cell = self.runtime.backend(view.namespace, view.name)
        cell.max_concurrency = view.max_concurrency
        if not view.health_check_enabled:
            cell.set_assumed_healthy()

    def _publish(
        self,
        *,
        backends: Mapping[Key, Backend],
        policies: Mapping[Key, RoutingPolicy],
        namespaces: Mapping[str, NamespaceSnapshot],
    ) -> None:
        snapshot = RegistrySnapshot(
            backends=backends,
            policies=policies,
            namespaces=namespaces,
            version=self._snapshot.version + 1,
        )
        self._snapshot = snapshot
        for listener in list(self._listeners):
            try:
                listener(snapshot)
            except Exception:
                log.exception("registry listener %r failed", listener)


def _differing(new: Mapping[Key, Model], old: Mapping[Key, Model]) -> tuple[Model, ...]:
    return tuple(obj for key, obj in new.items() if old.get(key) != obj)


def _namespace(
    namespace: str, views: list[BackendView], *, policies: dict[Key, RoutingPolicy]
) -> NamespaceSnapshot:
    own = [v for v in views if v.namespace == namespace]
    index: dict[str, dict[str, BackendView]] = {}
    for view in own:
        for model in view.models:
            index.setdefault(model, {})[view.name] = view
    compiled = [CompiledPolicy.compile(p) for k, p in policies.items() if k[0] == namespace]
    return NamespaceSnapshot(
        namespace, backends={v.name: v for v in own}, model_index=index, policies=compiled
    )
