"""Registry: the mutable holder the operator feeds; readers take `.snapshot` with one read."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from nexus_operator.api import Backend, RoutingPolicy
from nexus_operator.pipeline import BackendView, RuntimeState

from .credentials import CredentialStore
from .policies import CompiledPolicy
from .snapshot import Key, NamespaceSnapshot, RegistrySnapshot

log = logging.getLogger(__name__)

Listener = Callable[[RegistrySnapshot], None]


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

    @property
    def snapshot(self) -> RegistrySnapshot:
        return self._snapshot

    def add_listener(self, callback: Listener) -> None:
        self._listeners.append(callback)

    def upsert_backend(self, backend: Backend) -> None:
        view = BackendView.from_api(backend)
        self._ensure_runtime(view)
        snap = self._snapshot
        backends = dict(snap.backends)
        backends[view.key] = backend
        spaces = dict(snap.namespaces)
        spaces[view.namespace] = snap.namespace(view.namespace).with_backend(view)
        self._publish(backends=backends, policies=snap.policies, namespaces=spaces)

    def delete_backend(self, namespace: str, name: str) -> None:
        snap = self._snapshot
        if (namespace, name) not in snap.backends:
            return
        backends = {k: v for k, v in snap.backends.items() if k != (namespace, name)}
        spaces = dict(snap.namespaces)
        spaces[namespace] = snap.namespace(namespace).without_backend(name)
        self._publish(backends=backends, policies=snap.policies, namespaces=spaces)

    def upsert_policy(self, policy: RoutingPolicy) -> None:
        snap = self._snapshot
        policies = dict(snap.policies)
        policies[(policy.metadata.namespace, policy.metadata.name)] = policy
        self._publish_policies(policies, namespace=policy.metadata.namespace)

    def delete_policy(self, namespace: str, name: str) -> None:
        snap = self._snapshot
        if (namespace, name) not in snap.policies:
            return
        policies = {k: v for k, v in snap.policies.items() if k != (namespace, name)}
        self._publish_policies(policies, namespace=namespace)

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
        self._publish(backends=by_key, policies=policy_map, namespaces=spaces)

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
