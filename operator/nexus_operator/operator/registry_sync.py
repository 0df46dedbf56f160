"""Keeps the in-memory registry true to the cluster: watch events, periodic resync, rebuild on start.

Only spec and labels feed the registry, so our own status patches (which come back as watch
events) never produce a new snapshot; they only refresh the observed status the writers diff
against, and, for policies, the persisted spend other replicas added. A full list replaces the
registry wholesale, which also drops anything whose DELETED event was missed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pydantic

from nexus_operator import api

from .invalid_specs import InvalidSpecs, invalid_spec
from .kube import BACKENDS, POLICIES, Kind, KubeApi
from .observed import ObjectKey, ObservedStatuses, key_of

if TYPE_CHECKING:
    from nexus_operator.routing import Registry

logger = logging.getLogger(__name__)

DELETED = "DELETED"

Model = TypeVar("Model", api.Backend, api.RoutingPolicy)


@dataclass(frozen=True)
class Scope:
    """All namespaces (empty) or a fixed set."""

    namespaces: tuple[str, ...] = ()

    def list_paths(self, kind: Kind) -> list[str]:
        if not self.namespaces:
            return [kind.cluster_path()]
        return [kind.path(namespace) for namespace in self.namespaces]


def _unchanged(
    old: api.Backend | api.RoutingPolicy | None, new: api.Backend | api.RoutingPolicy
) -> bool:
    if old is new:
        return True
    return (
        old is not None
        and old.spec == new.spec
        and old.metadata.labels == new.metadata.labels
        and old.metadata.generation == new.metadata.generation
        and old.metadata.uid == new.metadata.uid
    )


class RegistrySync:
    """Applies watch events and full lists to the registry and the observed-status store.

    `invalid` holds the current rejection of every object whose spec the models reject.
    """

    def __init__(self, registry: Registry, observed: ObservedStatuses) -> None:
        self._registry = registry
        self._observed = observed
        self.invalid = InvalidSpecs()
        # Last validation per object: (what it depends on, the model or None when rejected).
        # Status-only events (our own writes, every flush) and resyncs reuse it instead of
        # validating the same spec again.
        self._parsed: dict[ObjectKey, tuple[tuple[Any, ...], Any]] = {}
        self.validations = 0
        # Told of every observed status (the budget ledger adopts persisted totals from it).
        self.on_status: Callable[[ObjectKey], None] | None = None

    def on_backend_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        key = key_of(BACKENDS.plural, body)
        namespace, name = key[1], key[2]
        if event_type == DELETED:
            self._forget(key)
            self.invalid.clear(key)
            self._registry.delete_backend(namespace, name)
            return
        backend = self._observe_backend(body)
        if backend is not None and not _unchanged(
            self._registry.snapshot.backends.get((namespace, name)), backend
        ):
            self._registry.upsert_backend(backend)

    def on_policy_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        key = key_of(POLICIES.plural, body)
        namespace, name = key[1], key[2]
        if event_type == DELETED:
            self._forget(key)
            self.invalid.clear(key)
            self._registry.delete_policy(namespace, name)
            return
        policy = self._observe_policy(body)
        if policy is not None and not _unchanged(
            self._registry.snapshot.policies.get((namespace, name)), policy
        ):
            self._registry.upsert_policy(policy)

    def replace_all(
        self, backends: Iterable[Mapping[str, Any]], policies: Iterable[Mapping[str, Any]]
    ) -> None:
        """Rebuild from full lists: restart, and the periodic resync after possibly lost events.

        An object whose spec is now invalid keeps its last valid spec, as on a watch event; one
        that is gone is forgotten, as on a DELETED event. Applied as a diff: an object whose
        spec, labels and generation are unchanged is neither validated again nor republished,
        so a resync that finds nothing new publishes no snapshot.
        """
        backends, policies = list(backends), list(policies)
        snapshot = self._registry.snapshot
        kept_backends = _with_last_valid(
            ((body, self._observe_backend(body)) for body in backends), snapshot.backends
        )
        kept_policies = _with_last_valid(
            ((body, self._observe_policy(body)) for body in policies), snapshot.policies
        )
        for key in snapshot.backends.keys() - kept_backends.keys():
            self._forget((BACKENDS.plural, *key))
        for key in snapshot.policies.keys() - kept_policies.keys():
            self._forget((POLICIES.plural, *key))
        self.invalid.retain(
            [key_of(BACKENDS.plural, body) for body in backends]
            + [key_of(POLICIES.plural, body) for body in policies]
        )
        self._registry.replace_all(kept_backends.values(), kept_policies.values())
        self._registry.synced = True

    def _observe_backend(self, body: Mapping[str, Any]) -> api.Backend | None:
        self._record(BACKENDS.plural, body)
        self._adopt(key_of(BACKENDS.plural, body))
        return self._validated(api.Backend, body, plural=BACKENDS.plural)

    def _observe_policy(self, body: Mapping[str, Any]) -> api.RoutingPolicy | None:
        self._record(POLICIES.plural, body)
        self._adopt(key_of(POLICIES.plural, body))
        return self._validated(api.RoutingPolicy, body, plural=POLICIES.plural)

    def _validated(
        self, model: type[Model], body: Mapping[str, Any], *, plural: str
    ) -> Model | None:
        """Spec and metadata only: status is the operator's own output, never an input to routing.

        None for a spec pydantic rejects; callers then keep the last valid spec they had, so a bad
        edit never removes a working object from routing (the API server's schema lets through
        what it stored before a rule tightened). The rejection is kept for status and logged once
        per generation, not on every status event our own writes cause.
        """
        key = key_of(plural, body)
        spec = body.get("spec") or {}
        metadata = body.get("metadata") or {}
        inputs = (
            metadata.get("uid"),
            metadata.get("generation"),
            metadata.get("labels"),
            metadata.get("annotations"),
            spec,
        )
        cached = self._parsed.get(key)
        if cached is not None and cached[0] == inputs:
            found: Model | None = cached[1]
            return found
        self.validations += 1
        try:
            parsed = model.model_validate({"metadata": metadata, "spec": spec})
        except pydantic.ValidationError as exc:
            self._parsed[key] = (inputs, None)
            record = invalid_spec(model.__name__, body, error=exc)
            if self.invalid.note(key, record):
                logger.warning(
                    "Invalid %s %s/%s, keeping its last valid spec if any: %s",
                    record.kind,
                    record.namespace,
                    record.name,
                    record.message,
                )
            return None
        self.invalid.clear(key)
        self._parsed[key] = (inputs, parsed)
        return parsed

    def _record(self, plural: str, body: Mapping[str, Any]) -> None:
        """Observe `body`; an object re-created under the same name first sheds the old one's state."""
        key = key_of(plural, body)
        previous = self._observed.get(key)
        uid = (body.get("metadata") or {}).get("uid")
        if previous is not None and previous.uid is not None and uid and previous.uid != uid:
            self._forget(key)
        self._observed.record(plural, body)

    def _forget(self, key: ObjectKey) -> None:
        """Drop observed status and runtime cell (spend, counters, health) of a deleted object."""
        plural, namespace, name = key
        self._observed.forget(key)
        self._parsed.pop(key, None)
        if plural == BACKENDS.plural:
            self._registry.runtime.forget_backend(namespace, name)
        else:
            self._registry.runtime.forget_policy(namespace, name)

    def _adopt(self, key: ObjectKey) -> None:
        """Spend persisted by other replicas (and, after a restart, our own) counts for the next
        decision. Read back from the observed store, which ignores events older than it holds."""
        if self.on_status is not None:
            self.on_status(key)


def _with_last_valid(
    parsed: Iterable[tuple[Mapping[str, Any], Model | None]],
    current: Mapping[tuple[str, str], Model],
) -> dict[tuple[str, str], Model]:
    """Listed objects by key, each invalid one replaced by the spec the registry already holds."""
    kept: dict[tuple[str, str], Model] = {}
    for body, model in parsed:
        _, namespace, name = key_of("", body)
        chosen = model if model is not None else current.get((namespace, name))
        if chosen is not None:
            kept[(namespace, name)] = chosen
    return kept


async def list_all(kube: KubeApi, scope: Scope, *, kind: Kind) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for path in scope.list_paths(kind):
        items.extend((await kube.get(path)).get("items") or [])
    return items


async def resync(kube: KubeApi, scope: Scope, *, sync: RegistrySync) -> None:
    backends = await list_all(kube, scope, kind=BACKENDS)
    policies = await list_all(kube, scope, kind=POLICIES)
    sync.replace_all(backends, policies)
