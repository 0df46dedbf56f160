"""Events are events.k8s.io/v1 objects the API server accepts: regarding, action, note, name."""

from __future__ import annotations

import re
from typing import Any

from nexus_operator.api import API_VERSION
from nexus_operator.operator import events
from nexus_operator.operator.events import EventRecorder, ObjectRef

SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def body(reason: str, message: str = "m", name: str = "flaky") -> dict[str, Any]:
    recorder = EventRecorder(None, component="nexus-operator", instance="pod-1")  # type: ignore[arg-type]
    ref = ObjectRef("Backend", "ns", name, uid="u-1")
    return recorder.event_body(
        ref, type_=events.WARNING, reason=reason, message=message, now="2026-01-01T00:00:00.000000Z"
    )


def test_an_event_is_events_k8s_io_v1_regarding_the_object() -> None:
    event = body(events.BACKEND_UNHEALTHY)
    assert event["apiVersion"] == "events.k8s.io/v1"
    assert event["regarding"] == {
        "apiVersion": API_VERSION,
        "kind": "Backend",
        "namespace": "ns",
        "name": "flaky",
        "uid": "u-1",
    }
    assert (event["reportingController"], event["reportingInstance"]) == ("nexus-operator", "pod-1")
    assert event["action"] == "ProbeHealth"
    assert "involvedObject" not in event
    assert "message" not in event


def test_every_reason_has_an_action_and_the_note_is_capped_at_1kib() -> None:
    for reason in events.ACTIONS:
        assert body(reason, "x" * 5000)["note"] == "x" * 1024


def test_event_names_are_dns_subdomains_even_for_the_longest_object_name() -> None:
    for name in ("flaky", "a" * 253, "b.c"):
        event_name = body(events.BUDGET_RESET, name=name)["metadata"]["name"]
        assert SUBDOMAIN.match(event_name)
        assert len(event_name) <= 253
