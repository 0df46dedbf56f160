"""The immutable registry snapshot: what decisions read, without locks.

A new RegistrySnapshot is published per change; only the changed namespace gets a new
NamespaceSnapshot, built incrementally (copy-on-write of the touched model-index entries), so a
change costs O(backends of that model) rather than O(registry). Memo tables (policy match per
model, alias resolution, available models) are filled on first use: they are pure functions of
the snapshot, so caching them does not break immutability.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TypeVar

from nexus_operator.api import Backend, RoutingPolicy
from nexus_operator.pipeline import AliasResolution, BackendView, resolve_alias

from .policies import CompiledPolicy

Key = tuple[str, str]
T = TypeVar("T")
MODEL_LIST_MAX = 50
_MEMO_MAX = 10_000


class NamespaceSnapshot:
    """Backends, model index, policies and the alias map of one namespace."""

    __slots__ = (
        "_available",
        "_matches",
        "_resolutions",
        "alias_sources",
        "aliases",
        "backends",
        "model_index",
        "namespace",
        "policies",
    )

    def __init__(
        self,
        namespace: str,
        *,
        backends: Mapping[str, BackendView],
        model_index: Mapping[str, Mapping[str, BackendView]],
        policies: Iterable[CompiledPolicy],
    ) -> None:
        self.namespace = namespace
        self.backends = backends
        self.model_index = model_index
        self.policies = tuple(sorted(policies, key=lambda p: (p.precedence, p.name)))
        self.aliases, self.alias_sources = _alias_map(self.policies)
        self._matches: dict[str, CompiledPolicy | None] = {}
        self._resolutions: dict[str, AliasResolution] = {}
        self._available: dict[str | None, list[str]] = {}

    @classmethod
    def empty(cls, namespace: str) -> NamespaceSnapshot:
        return cls(namespace, backends={}, model_index={}, policies=())

    def with_backend(self, view: BackendView) -> NamespaceSnapshot:
        old = self.backends.get(view.name)
        backends = dict(self.backends)
        backends[view.name] = view
        index = _reindex(self.model_index, view.name, old=old, new=view)
        return NamespaceSnapshot(
            self.namespace, backends=backends, model_index=index, policies=self.policies
        )

    def without_backend(self, name: str) -> NamespaceSnapshot:
        old = self.backends.get(name)
        if old is None:
            return self
        backends = {k: v for k, v in self.backends.items() if k != name}
        index = _reindex(self.model_index, name, old=old, new=None)
        return NamespaceSnapshot(
            self.namespace, backends=backends, model_index=index, policies=self.policies
        )

    def with_policies(self, policies: Iterable[CompiledPolicy]) -> NamespaceSnapshot:
        return NamespaceSnapshot(
            self.namespace, backends=self.backends, model_index=self.model_index, policies=policies
        )

    def policy(self, name: str) -> CompiledPolicy | None:
        return next((p for p in self.policies if p.name == name), None)

    def resolve(self, model: str) -> AliasResolution:
        """Alias resolution of a requested model (memoised)."""
        found = self._resolutions.get(model)
        if found is None:
            found = resolve_alias(model, self.aliases)
            _remember(self._resolutions, model, value=found)
        return found

    def match(self, model: str) -> CompiledPolicy | None:
        """The policy for a resolved model: lowest precedence, then longest literal prefix, then
        name ascending; None when no pattern matches (memoised)."""
        if model in self._matches:
            return self._matches[model]
        best: tuple[int, int, str] | None = None
        winner: CompiledPolicy | None = None
        for policy in self.policies:
            prefix = policy.match_prefix(model)
            if prefix is None:
                continue
            rank = (policy.precedence, -prefix, policy.name)
            if best is None or rank < best:
                best, winner = rank, policy
        _remember(self._matches, model, value=winner)
        return winner

    def offering(self, policy: CompiledPolicy | None, model: str) -> list[BackendView]:
        """Backends in the policy's scope (the namespace without one) listing `model`."""
        listed = self.model_index.get(model)
        if not listed:
            return []
        if policy is None or policy.spec.backend_selector is None:
            return list(listed.values())
        return [b for b in listed.values() if policy.in_scope(b)]

    def in_scope(self, policy: CompiledPolicy | None) -> list[BackendView]:
        if policy is None or policy.spec.backend_selector is None:
            return list(self.backends.values())
        return [b for b in self.backends.values() if policy.in_scope(b)]

    def available_models(self, policy: CompiledPolicy | None) -> list[str]:
        """Models listed by backends in scope, in any state: deduplicated, sorted, at most 50."""
        key = policy.name if policy is not None else None
        found = self._available.get(key)
        if found is None:
            models = {m for b in self.in_scope(policy) for m in b.models}
            found = sorted(models)[:MODEL_LIST_MAX]
            self._available[key] = found
        return found


class RegistrySnapshot:
    """Everything known at one moment. `backends` and `policies` hold the API objects keyed by
    (namespace, name); `namespaces` holds the decision-side views."""

    __slots__ = ("backends", "namespaces", "policies", "version")

    def __init__(
        self,
        *,
        backends: Mapping[Key, Backend],
        policies: Mapping[Key, RoutingPolicy],
        namespaces: Mapping[str, NamespaceSnapshot],
        version: int,
    ) -> None:
        self.backends = MappingProxyType(dict(backends))
        self.policies = MappingProxyType(dict(policies))
        self.namespaces = MappingProxyType(dict(namespaces))
        self.version = version

    @classmethod
    def empty(cls) -> RegistrySnapshot:
        return cls(backends={}, policies={}, namespaces={}, version=0)

    def namespace(self, namespace: str) -> NamespaceSnapshot:
        found = self.namespaces.get(namespace)
        return found if found is not None else NamespaceSnapshot.empty(namespace)


def _reindex(
    index: Mapping[str, Mapping[str, BackendView]],
    name: str,
    *,
    old: BackendView | None,
    new: BackendView | None,
) -> dict[str, Mapping[str, BackendView]]:
    """Copy-on-write update of the model index for one backend."""
    updated = dict(index)
    for model in old.models if old is not None else ():
        entry = {k: v for k, v in updated.get(model, {}).items() if k != name}
        if entry:
            updated[model] = entry
        else:
            updated.pop(model, None)
    if new is not None:
        for model in new.models:
            entry = dict(updated.get(model, {}))
            entry[name] = new
            updated[model] = entry
    return updated


def _alias_map(policies: tuple[CompiledPolicy, ...]) -> tuple[dict[str, str], dict[str, str]]:
    """One namespace-wide map; policies arrive sorted by (precedence, name), so the first
    definition of a name wins."""
    aliases: dict[str, str] = {}
    sources: dict[str, str] = {}
    for policy in policies:
        for name, target in policy.spec.aliases.items():
            if name not in aliases:
                aliases[name] = target
                sources[name] = policy.name
    return aliases, sources


def _remember(memo: dict[str, T], key: str, *, value: T) -> None:
    """Bounded memo: arbitrary client model names must not grow memory without limit."""
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[key] = value
