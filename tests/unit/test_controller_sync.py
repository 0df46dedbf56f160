"""Registry sync: watch events and full lists, invalid edits, deleted and re-created objects."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from nexus_operator.operator.budget_ledger import BudgetLedger
from nexus_operator.operator.kube import BACKENDS, POLICIES, KubeApi
from nexus_operator.operator.observed import ObservedStatuses
from nexus_operator.operator.registry_sync import DELETED, RegistrySync
from nexus_operator.routing import Registry

NOW = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
VALID = {"type": "ollama", "url": "http://127.0.0.1:11434"}
# Valid for the API server's schema as far as this test goes, rejected by pydantic.
INVALID = {"type": "ollama", "url": "http://127.0.0.1:11434", "healthCheck": {"intervalSeconds": 0}}


def _body(kind: str, spec: dict[str, Any], *, uid: str = "uid-1", version: int = 1) -> Any:
    return {
        "kind": kind,
        "metadata": {
            "name": "x",
            "namespace": "ns",
            "uid": uid,
            "generation": version,
            "resourceVersion": str(version),
        },
        "spec": spec,
    }


def _sync() -> tuple[Registry, RegistrySync]:
    registry = Registry()
    return registry, RegistrySync(registry, ObservedStatuses())


def test_invalid_edit_keeps_the_last_valid_spec_on_watch_and_on_resync(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry, sync = _sync()
    sync.on_backend_event("ADDED", _body("Backend", VALID))
    with caplog.at_level(logging.WARNING):
        sync.on_backend_event("MODIFIED", _body("Backend", INVALID, version=2))
    watched = registry.snapshot.backends[("ns", "x")]
    sync.replace_all([_body("Backend", INVALID, version=2)], [])
    resynced = registry.snapshot.backends.get(("ns", "x"))
    assert watched.spec.health_check.interval_seconds != 0
    assert resynced == watched
    assert "intervalSeconds" in caplog.text


def test_resync_forgets_an_object_whose_deletion_was_missed() -> None:
    registry, sync = _sync()
    sync.on_policy_event("ADDED", _body("RoutingPolicy", {}))
    registry.runtime.policy("ns", "x").add_spend(5.0, NOW)
    sync.replace_all([], [])
    assert registry.runtime.policy("ns", "x").spent_at(NOW) == 0.0


def test_recreated_policy_starts_without_the_deleted_policys_spend() -> None:
    registry, sync = _sync()
    sync.on_policy_event("ADDED", _body("RoutingPolicy", {}))
    registry.runtime.policy("ns", "x").add_spend(5.0, NOW)
    sync.on_policy_event(DELETED, _body("RoutingPolicy", {}, version=2))
    sync.on_policy_event("ADDED", _body("RoutingPolicy", {}, uid="uid-2", version=3))
    assert registry.runtime.policy("ns", "x").spent_at(NOW) == 0.0


def test_policy_recreated_while_the_watch_was_down_sheds_the_old_spend() -> None:
    registry, sync = _sync()
    sync.on_policy_event("ADDED", _body("RoutingPolicy", {}))
    registry.runtime.policy("ns", "x").add_spend(5.0, NOW)
    sync.on_policy_event("ADDED", _body("RoutingPolicy", {}, uid="uid-2", version=3))
    assert registry.runtime.policy("ns", "x").spent_at(NOW) == 0.0


def test_recreated_backend_counts_only_its_own_selections() -> None:
    registry, sync = _sync()
    ledger = BudgetLedger(cast(KubeApi, None), registry, ObservedStatuses(), replica="me")
    sync.on_backend_event("ADDED", _body("Backend", VALID))
    registry.runtime.backend("ns", "x").selected_total = 3
    sync.on_backend_event(DELETED, _body("Backend", VALID, version=2))
    sync.on_backend_event("ADDED", _body("Backend", VALID, uid="uid-2", version=3))
    registry.runtime.backend("ns", "x").selected_total = 1
    assert ledger.backend_entry("ns", "x") == {"replica": "me", "selected": 1}


BAD_WEIGHTS = {"selection": {"weights": {"priority": 10, "load": 10, "latency": 10}}}
POLICY_KEY = (POLICIES.plural, "ns", "x")


def test_rejected_policy_is_recorded_with_its_generation_uid_and_the_wire_path_of_the_field() -> (
    None
):
    _, sync = _sync()
    sync.on_policy_event("ADDED", _body("RoutingPolicy", BAD_WEIGHTS, version=4))
    record = sync.invalid.get(POLICY_KEY)
    assert record is not None
    assert (record.kind, record.namespace, record.name) == ("RoutingPolicy", "ns", "x")
    assert (record.generation, record.uid) == (4, "uid-1")
    assert record.message == (
        "spec.selection.weights: `selection.weights` priority + load + latency must sum to 100"
    )


def test_record_message_names_list_items_by_index_in_camel_case() -> None:
    _, sync = _sync()
    spec = {**VALID, "models": [{"id": "a"}, {"id": "b", "contextLength": 0}]}
    sync.on_backend_event("ADDED", _body("Backend", spec))
    record = sync.invalid.get((BACKENDS.plural, "ns", "x"))
    assert record is not None
    assert record.message.startswith("spec.models[1].contextLength: ")


def test_later_valid_version_clears_the_record_and_enters_the_registry() -> None:
    registry, sync = _sync()
    sync.on_policy_event("ADDED", _body("RoutingPolicy", BAD_WEIGHTS))
    sync.on_policy_event("MODIFIED", _body("RoutingPolicy", {}, version=2))
    assert sync.invalid.get(POLICY_KEY) is None
    assert ("ns", "x") in registry.snapshot.policies


def test_deleting_a_rejected_object_clears_its_record() -> None:
    _, sync = _sync()
    sync.on_policy_event("ADDED", _body("RoutingPolicy", BAD_WEIGHTS))
    sync.on_policy_event(DELETED, _body("RoutingPolicy", BAD_WEIGHTS, version=2))
    assert sync.invalid.get(POLICY_KEY) is None


def test_resync_keeps_records_of_listed_objects_and_drops_those_gone() -> None:
    _, sync = _sync()
    sync.on_policy_event("ADDED", _body("RoutingPolicy", BAD_WEIGHTS))
    sync.on_backend_event("ADDED", _body("Backend", INVALID))
    sync.replace_all([], [_body("RoutingPolicy", BAD_WEIGHTS)])
    assert sync.invalid.get(POLICY_KEY) is not None
    assert sync.invalid.get((BACKENDS.plural, "ns", "x")) is None


def test_rejection_is_logged_once_per_generation_not_per_status_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, sync = _sync()
    with caplog.at_level(logging.WARNING):
        sync.on_policy_event("ADDED", _body("RoutingPolicy", BAD_WEIGHTS))
        sync.on_policy_event("MODIFIED", _body("RoutingPolicy", BAD_WEIGHTS))
        sync.on_policy_event("MODIFIED", _body("RoutingPolicy", BAD_WEIGHTS, version=2))
    assert caplog.text.count("Invalid RoutingPolicy ns/x") == 2


def _fleet_bodies(count: int, *, status_version: int = 1) -> list[dict[str, Any]]:
    bodies = []
    for i in range(count):
        body = _body("Backend", {**VALID, "models": [{"id": f"m{i % 3}"}]}, uid=f"uid-{i}")
        body["metadata"]["name"] = f"b{i}"
        body["metadata"]["resourceVersion"] = str(status_version * 1000 + i)
        body["status"] = {"health": {"state": "Healthy"}, "seen": status_version}
        bodies.append(body)
    return bodies


def test_a_resync_that_finds_nothing_new_validates_nothing_and_publishes_no_snapshot() -> None:
    registry, sync = _sync()
    sync.replace_all(_fleet_bodies(20), [])
    published, validations = registry.publishes, sync.validations
    before = registry.snapshot
    sync.replace_all(_fleet_bodies(20, status_version=2), [])
    assert registry.snapshot is before
    assert registry.publishes == published
    assert sync.validations == validations


def test_a_resync_with_one_changed_spec_validates_and_publishes_only_that_change() -> None:
    registry, sync = _sync()
    sync.replace_all(_fleet_bodies(20), [])
    published, validations = registry.publishes, sync.validations
    old = registry.snapshot.namespace("ns")
    bodies = _fleet_bodies(20, status_version=2)
    bodies[4]["spec"] = {**VALID, "models": [{"id": "m9"}]}
    bodies[4]["metadata"]["generation"] = 2
    sync.replace_all(bodies, [])
    assert registry.publishes == published + 1
    assert sync.validations == validations + 1
    changed = registry.snapshot.namespace("ns").changes_since(old)
    assert changed is not None
    assert changed.backends == {"b4"}


def test_status_only_events_neither_validate_the_spec_again_nor_publish() -> None:
    registry, sync = _sync()
    body = _fleet_bodies(1)[0]
    sync.on_backend_event("ADDED", body)
    published, validations = registry.publishes, sync.validations
    for version in range(2, 6):
        sync.on_backend_event("MODIFIED", _fleet_bodies(1, status_version=version)[0])
    assert registry.publishes == published
    assert sync.validations == validations
