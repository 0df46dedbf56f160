"""The immutable registry snapshot: what decisions read, without locks.

A new RegistrySnapshot is published per change; only the changed namespace gets a new
NamespaceSnapshot, built incrementally (copy-on-write of the touched model-index entries), so a
change costs O(backends of that model) rather than O(registry). Memo tables (policy match per
model, alias resolution, available models) are filled on first use: they are pure functions of
the snapshot, so caching them does not break immutability; a change to backends only keeps
the policy-side ones (sorted policies, alias map, match and alias memos).

Each namespace's successive snapshots share a ChangeJournal: revision N records which backends
(or whether the policies) changed from revision N-1. Readers that keep derived state per
snapshot (the engine's plans, the static index) ask it what changed since the revision they
built from and update only that.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

from nexus_operator.api import Backend, RoutingPolicy
from nexus_operator.pipeline import AliasResolution, BackendView, resolve_alias

from .policies import CompiledPolicy

Key = tuple[str, str]
T = TypeVar("T")
MODEL_LIST_MAX = 50
_MEMO_MAX = 10_000
# Revisions a journal remembers; a reader further behind rebuilds from the snapshot.
JOURNAL_MAX = 1024


@dataclass(frozen=True, slots=True)
class NamespaceChange:
    """What changed in a namespace between two revisions: these backends (added, changed or
    removed) and, when `policies`, its policies."""

    backends: frozenset[str] = frozenset()
    policies: bool = False


class ChangeJournal:
    """The changes between successive revisions of one namespace's snapshots (bounded)."""

    __slots__ = ("_entries", "_last")

    def __init__(self) -> None:
        self._entries: deque[NamespaceChange] = deque(maxlen=JOURNAL_MAX)
        self._last = 0

    def record(self, change: NamespaceChange) -> int:
        """Append the change that makes the next revision; returns that revision."""
        self._last += 1
        self._entries.append(change)
        return self._last

    def since(self, old: int, new: int) -> NamespaceChange | None:
        """Everything that changed after revision `old` up to `new`; None when no longer known."""
        first = self._last - len(self._entries) + 1
        if new < old or new > self._last or old + 1 < first:
            return None
        names: set[str] = set()
        policies = False
        for revision in range(old + 1, new + 1):
            entry = self._entries[revision - first]
            names.update(entry.backends)
            policies = policies or entry.policies
        return NamespaceChange(frozenset(names), policies)


class NamespaceSnapshot:
    """Backends, model index, policies and the alias map of one namespace."""

    __slots__ = (
        "_available",
        "_matches",
        "_resolutions",
        "alias_sources",
        "aliases",
        "backends",
        "journal",
        "model_index",
        "namespace",
        "policies",
        "revision",
    )

    def __init__(
        self,
        namespace: str,
        *,
        backends: Mapping[str, BackendView],
        model_index: Mapping[str, Mapping[str, BackendView]],
        policies: Iterable[CompiledPolicy],
        journal: ChangeJournal | None = None,
        revision: int = 0,
    ) -> None:
        self.namespace = namespace
        self.backends = backends
        self.model_index = model_index
        self.policies = tuple(sorted(policies, key=lambda p: (p.precedence, p.name)))
        self.aliases, self.alias_sources = _alias_map(self.policies)
        self._matches: dict[str, CompiledPolicy | None] = {}
        self._resolutions: dict[str, AliasResolution] = {}
        self._available: dict[str | None, list[str]] = {}
        self.journal = journal if journal is not None else ChangeJournal()
        self.revision = revision

    @classmethod
    def empty(cls, namespace: str) -> NamespaceSnapshot:
        return cls(namespace, backends={}, model_index={}, policies=())

    def with_backend(self, view: BackendView) -> NamespaceSnapshot:
        return self.with_changes(upserts=(view,))

    def without_backend(self, name: str) -> NamespaceSnapshot:
        if name not in self.backends:
            return self
        return self.with_changes(deletes=(name,))

    def with_policies(self, policies: Iterable[CompiledPolicy]) -> NamespaceSnapshot:
        return self.with_changes(policies=policies)

    def with_changes(
        self,
        *,
        upserts: Iterable[BackendView] = (),
        deletes: Iterable[str] = (),
        policies: Iterable[CompiledPolicy] | None = None,
    ) -> NamespaceSnapshot:
        """The next revision: these backends upserted or removed, the policies replaced when
        given. Costs one copy of the name map plus the touched model-index entries."""
        upserts, deletes = tuple(upserts), tuple(deletes)
        changed = {v.name for v in upserts} | set(deletes)
        backends = dict(self.backends) if changed else self.backends
        index = self.model_index
        if changed:
            assert isinstance(backends, dict)
            index = _reindex(self.model_index, backends, upserts=upserts, deletes=deletes)
        same_policies = policies is None
        successor = NamespaceSnapshot.__new__(NamespaceSnapshot)
        successor.namespace = self.namespace
        successor.backends = backends
        successor.model_index = index
        if same_policies:
            # Policy-side state is a function of the policies alone: shared, memos included.
            successor.policies = self.policies
            successor.aliases, successor.alias_sources = self.aliases, self.alias_sources
            successor._matches = self._matches
            successor._resolutions = self._resolutions
        else:
            assert policies is not None
            successor.policies = tuple(sorted(policies, key=lambda p: (p.precedence, p.name)))
            successor.aliases, successor.alias_sources = _alias_map(successor.policies)
            successor._matches = {}
            successor._resolutions = {}
        successor._available = {}
        successor.journal = self.journal
        successor.revision = self.journal.record(
            NamespaceChange(frozenset(changed), policies=not same_policies)
        )
        return successor

    def changes_since(self, older: NamespaceSnapshot) -> NamespaceChange | None:
        """What changed from `older` (an earlier revision of this namespace) to this one; None
        when unknown (another lineage, or too far behind): then rebuild everything."""
        if older.journal is not self.journal:
            return None
        return self.journal.since(older.revision, self.revision)

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
        owned: bool = False,
    ) -> None:
        """`owned`: the maps are fresh dicts no one else holds, wrapped without a copy."""
        self.backends = MappingProxyType(backends if owned else dict(backends))
        self.policies = MappingProxyType(policies if owned else dict(policies))
        self.namespaces = MappingProxyType(namespaces if owned else dict(namespaces))
        self.version = version

    @classmethod
    def empty(cls) -> RegistrySnapshot:
        return cls(backends={}, policies={}, namespaces={}, version=0)

    def namespace(self, namespace: str) -> NamespaceSnapshot:
        found = self.namespaces.get(namespace)
        return found if found is not None else NamespaceSnapshot.empty(namespace)


def _reindex(
    index: Mapping[str, Mapping[str, BackendView]],
    backends: dict[str, BackendView],
    *,
    upserts: tuple[BackendView, ...],
    deletes: tuple[str, ...],
) -> dict[str, Mapping[str, BackendView]]:
    """Apply upserts and deletes to `backends` (a fresh copy, changed in place) and return the
    model index copied on write: only the entries of models the changed backends list."""
    touched: dict[str, dict[str, BackendView]] = {}

    def entry(model: str) -> dict[str, BackendView]:
        found = touched.get(model)
        if found is None:
            found = touched[model] = dict(index.get(model, {}))
        return found

    for name in deletes:
        old = backends.pop(name, None)
        for model in old.models if old is not None else ():
            entry(model).pop(name, None)
    for view in upserts:
        old = backends.get(view.name)
        for model in old.models if old is not None else ():
            entry(model).pop(view.name, None)
        backends[view.name] = view
        for model in view.models:
            entry(model)[view.name] = view
    updated = dict(index)
    for model, listed in touched.items():
        if listed:
            updated[model] = listed
        else:
            updated.pop(model, None)
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
