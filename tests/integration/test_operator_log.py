"""The operator's log keeps what an operator reads: kopf's per-event "Handler ... succeeded."
lines (one per watch event, our own status writes included) are dropped; handler failures and
the operator's own messages are not."""

from __future__ import annotations

import logging

import pytest
from operator_support import Objects, condition, operator_config, running_operator, wait_for

from nexus_operator.operator.handlers import QuietEventHandlerSuccess
from nexus_testkit.localcluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nexus_crds")]


def test_status_writes_leave_no_handler_succeeded_lines_in_the_log(
    cluster: Cluster, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    config = operator_config(cluster.kubeconfig, namespace)
    with cluster.api_client() as api, running_operator(config) as operator:
        objects = Objects(api, namespace)
        spec = {"type": "ollama", "url": "http://127.0.0.1:9", "models": [{"id": "llama3:8b"}]}
        objects.create("backends", "b", {**spec, "healthCheck": {"enabled": False}})
        objects.create("routingpolicies", "p", {"modelPatterns": ["llama*"]})
        for name in ("a", "c"):
            objects.create("routingpolicies", name, {"modelPatterns": [f"{name}*"]})
        wait_for(lambda: condition(objects.status("routingpolicies", "p"), "Ready"))
        wait_for(lambda: condition(objects.status("backends", "b"), "Ready"))
        held = operator.call(lambda c: len(c.registry.snapshot.policies))
    assert held == 3
    kopf_lines = [r.getMessage() for r in caplog.records if r.name == "kopf.objects"]
    assert not [line for line in kopf_lines if line.endswith("succeeded.")], kopf_lines


def _record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)


@pytest.mark.parametrize(
    ("level", "message", "kept"),
    [
        (logging.INFO, "Handler 'build_registry.<locals>.backend_event' succeeded.", False),
        (logging.INFO, "Handler 'policy_event' succeeded.", False),
        (logging.ERROR, "Handler 'policy_event' failed with an exception. Will retry.", True),
        (logging.INFO, "Handler 'some_other_handler' succeeded.", True),
        (logging.INFO, "Timer 'x' succeeded.", True),
    ],
)
def test_the_filter_drops_only_our_event_handlers_successes(
    level: int, message: str, kept: bool
) -> None:
    assert QuietEventHandlerSuccess().filter(_record(level, message)) is kept
