"""The CRDs as users meet them on a real API server: the examples apply and read back with
their defaults, `kubectl get` prints the columns, `kubectl explain` shows the model's
descriptions, and a full status survives the status subresource unpruned."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from operator_support import wait_for
from pydantic import BaseModel

from nexus_crds import GROUP, PLURALS, VERSION, install_crds
from nexus_operator.api import (
    BackendSpec,
    BackendStatus,
    RoutingPolicySpec,
    RoutingPolicyStatus,
    crdgen,
)
from nexus_testkit.localcluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nexus_crds")]

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
SPEC_MODELS: dict[str, type[BaseModel]] = {
    "Backend": BackendSpec,
    "RoutingPolicy": RoutingPolicySpec,
}
TIME = "2026-03-14T15:09:26Z"
CONDITION = {
    "type": "Ready",
    "status": "True",
    "reason": "Accepted",
    "message": "accepted by the operator",
    "lastTransitionTime": TIME,
    "observedGeneration": 1,
}
FULL_BACKEND_STATUS: dict[str, Any] = {
    "observedGeneration": 1,
    "conditions": [CONDITION, {**CONDITION, "type": "Healthy", "reason": "HealthCheckPassed"}],
    "zone": "Open",
    "health": {
        "state": "Healthy",
        "latencyMs": 12.5,
        "lastProbeTime": TIME,
        "consecutiveFailures": 0,
        "lastError": "connection refused",
    },
    "routing": {"selectedTotal": 42, "lastSelectedTime": TIME, "inFlight": 3},
    "replicas": [
        {"replica": "nexus-operator-7d9f-abcde", "selected": 40, "lastSelectedTime": TIME}
    ],
    "retiredSelected": 2,
    "exclusions": [
        {
            "policy": "internal-restricted",
            "reconciler": "privacy",
            "reasonCode": "privacy_zone",
            "reason": "zone Open is not allowed by privacy restricted",
            "suggestedAction": "set spec.zone: Restricted if the data may stay here",
        }
    ],
}
FULL_POLICY_STATUS: dict[str, Any] = {
    "observedGeneration": 2,
    "conditions": [CONDITION, {**CONDITION, "type": "Shadowed", "status": "False"}],
    "matchedBackends": 4,
    "eligibleCount": 2,
    "eligibleBackends": ["vllm-gpu", "ollama-workstation"],
    "exclusions": [
        {
            "backend": "openai",
            "reconciler": "privacy",
            "reasonCode": "privacy_zone",
            "reason": "zone Open is not allowed by privacy restricted",
            "suggestedAction": "use a Restricted backend",
        }
    ],
    "budget": {
        "period": "2026-03",
        "spentUsd": 161.25,
        "limitUsd": 200.0,
        "utilizationPercent": 80.625,
        "state": "SoftLimit",
        "resetsAt": "2026-04-01T00:00:00Z",
        "previousPeriod": "2026-02",
        "previousSpentUsd": 187.5,
    },
    "decisions": {
        "routed": 1000,
        "rejected": 7,
        "queued": 2,
        "lastRouted": {"time": TIME, "model": "gpt-4o", "backend": "openai", "reason": "smart"},
        "lastRejected": {"time": TIME, "model": "gpt-5", "reasons": ["model_not_found"]},
    },
    "replicas": [
        {
            "replica": "nexus-operator-7d9f-abcde",
            "period": "2026-03",
            "spentUsd": 100.0,
            "previousPeriod": "2026-02",
            "previousSpentUsd": 120.0,
            "routed": 600,
            "rejected": 5,
            "queued": 2,
        },
        {
            "replica": "nexus-operator-7d9f-fghij",
            "period": "2026-03",
            "spentUsd": 61.25,
            "previousPeriod": "2026-02",
            "previousSpentUsd": 67.5,
            "routed": 390,
            "rejected": 2,
            "queued": 0,
        },
    ],
    "retired": {"routed": 10, "rejected": 0, "queued": 0},
}


@pytest.fixture(scope="module")
def objects(cluster: Cluster) -> Iterator[client.CustomObjectsApi]:
    with cluster.api_client() as api:
        yield client.CustomObjectsApi(api)


def _example_objects() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(EXAMPLES_DIR.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d["kind"] in SPEC_MODELS)
    return docs


def _with_defaults(kind: str, spec: dict[str, Any]) -> Any:
    """What the API server should store: the input plus every default, as the model sees it."""
    model = SPEC_MODELS[kind].model_validate(spec)
    return _keep_given_empties(
        model.model_dump(mode="json", by_alias=True, exclude_none=True), spec
    )


def _keep_given_empties(dumped: Any, given: Any) -> Any:
    """Empty lists and maps the user did not write are not defaults (the schema has none)."""
    if isinstance(dumped, dict):
        given = given if isinstance(given, dict) else {}
        return {
            key: _keep_given_empties(value, given.get(key))
            for key, value in dumped.items()
            if key in given or value not in ([], {})
        }
    if isinstance(dumped, list) and isinstance(given, list):
        return [_keep_given_empties(d, g) for d, g in zip(dumped, given, strict=True)]
    return dumped


def _get(
    objects: client.CustomObjectsApi, *, namespace: str, kind: str, name: str
) -> dict[str, Any]:
    got: dict[str, Any] = objects.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[kind], name
    )
    return got


def _write_status(
    objects: client.CustomObjectsApi,
    *,
    namespace: str,
    kind: str,
    name: str,
    status: dict[str, Any],
) -> None:
    objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURALS[kind], name, {"status": status}
    )


def _unset_fields(model: BaseModel, path: str = "") -> list[str]:
    """Fields of `model` (recursively) that were never given a value."""
    missing = []
    for name, info in type(model).model_fields.items():
        here = f"{path}.{info.alias or name}"
        if name not in model.model_fields_set:
            missing.append(here)
        value = getattr(model, name)
        children = value if isinstance(value, list) else [value]
        for child in children:
            if isinstance(child, BaseModel):
                missing.extend(_unset_fields(child, here))
    return missing


def test_every_example_is_accepted_and_reads_back_with_defaults(
    cluster: Cluster, objects: client.CustomObjectsApi, namespace: str
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES_DIR))
    mismatched = []
    for example in _example_objects():
        kind, name = example["kind"], example["metadata"]["name"]
        stored = _get(objects, namespace=namespace, kind=kind, name=name)
        if stored["spec"] != _with_defaults(kind, example["spec"]):
            mismatched.append((kind, name, stored["spec"]))
    assert mismatched == []


def test_absent_nested_objects_read_back_fully_defaulted(
    objects: client.CustomObjectsApi, namespace: str
) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RoutingPolicy",
        "metadata": {"name": "bare"},
        "spec": {"modelPatterns": ["*"], "selection": {"strategy": "random"}},
    }
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "routingpolicies", body)
    spec = _get(objects, namespace=namespace, kind="RoutingPolicy", name="bare")["spec"]
    assert spec["selection"] == {
        "strategy": "random",
        "weights": {"priority": 50, "load": 30, "latency": 20},
    }
    assert spec["quality"] == {
        "enabled": True,
        "errorRateThreshold": 0.5,
        "ttftPenaltyThresholdMs": 3000,
    }


@pytest.mark.parametrize(
    ("kind", "name", "status", "model"),
    [
        ("Backend", "openai", FULL_BACKEND_STATUS, BackendStatus),
        ("RoutingPolicy", "internal-restricted", FULL_POLICY_STATUS, RoutingPolicyStatus),
    ],
    ids=["backend", "routingpolicy"],
)
def test_full_status_written_through_subresource_reads_back_intact(
    cluster: Cluster,
    objects: client.CustomObjectsApi,
    namespace: str,
    kind: str,
    name: str,
    status: dict[str, Any],
    model: type[BaseModel],
) -> None:
    assert _unset_fields(model.model_validate(status)) == []
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES_DIR))
    _write_status(objects, namespace=namespace, kind=kind, name=name, status=status)
    assert _get(objects, namespace=namespace, kind=kind, name=name)["status"] == status


def test_status_field_the_schema_does_not_declare_is_pruned(
    cluster: Cluster, objects: client.CustomObjectsApi, namespace: str
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES_DIR))
    status = {"zone": "Restricted", "undeclared": "dropped"}
    _write_status(objects, namespace=namespace, kind="Backend", name="vllm-gpu", status=status)
    assert _get(objects, namespace=namespace, kind="Backend", name="vllm-gpu")["status"] == {
        "zone": "Restricted"
    }


def _table(output: str) -> tuple[list[str], dict[str, list[str]]]:
    """kubectl's table: header cells, and row cells by NAME (no cell here holds a space)."""
    lines = [line.split() for line in output.strip().splitlines()]
    return lines[0], {row[0]: row for row in lines[1:]}


def _examples_with_a_full_policy_status(
    cluster: Cluster, objects: client.CustomObjectsApi, namespace: str
) -> None:
    """examples/ applied, and policy `internal-restricted` given FULL_POLICY_STATUS."""
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES_DIR))
    _write_status(
        objects,
        namespace=namespace,
        kind="RoutingPolicy",
        name="internal-restricted",
        status=FULL_POLICY_STATUS,
    )


def test_kubectl_get_prints_the_backend_columns(
    cluster: Cluster, objects: client.CustomObjectsApi, namespace: str
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES_DIR))
    _write_status(
        objects, namespace=namespace, kind="Backend", name="openai", status=FULL_BACKEND_STATUS
    )
    header, rows = _table(cluster.kubectl("get", "be", "-n", namespace).stdout)
    assert header == ["NAME", "TYPE", "ZONE", "TIER", "HEALTH", "LATENCY(MS)", "AGE"]
    assert rows["openai"][1:6] == ["openai", "Open", "5", "Healthy", "12.5"]


def test_kubectl_get_prints_the_routing_policy_columns(
    cluster: Cluster, objects: client.CustomObjectsApi, namespace: str
) -> None:
    _examples_with_a_full_policy_status(cluster, objects, namespace)
    header, rows = _table(cluster.kubectl("get", "rp", "-n", namespace).stdout)
    assert header == [
        "NAME", "PATTERNS", "PRECEDENCE", "PRIVACY", "STRATEGY", "ELIGIBLE", "BUDGET", "AGE",
    ]  # fmt: skip
    assert rows["internal-restricted"][1:7] == [
        '["internal-*"]',
        "100",
        "restricted",
        "priorityOnly",
        "2",
        "SoftLimit",
    ]


def test_nexus_category_lists_both_kinds(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES_DIR))
    names = cluster.kubectl("get", "nexus", "-n", namespace, "-o", "name").stdout.split()
    assert {n.split("/")[0] for n in names} == {
        f"backend.{GROUP}",
        f"routingpolicy.{GROUP}",
    }


@pytest.mark.parametrize(
    ("resource", "model", "field"),
    [
        ("backend.spec.zone", BackendSpec, "zone"),
        ("be.spec.credentialsSecretRef", BackendSpec, "credentials_secret_ref"),
        ("routingpolicy.spec.modelPatterns", RoutingPolicySpec, "model_patterns"),
        ("rp.spec.budget", RoutingPolicySpec, "budget"),
    ],
)
def test_kubectl_explain_shows_the_model_description(
    cluster: Cluster, resource: str, model: type[BaseModel], field: str
) -> None:
    output = cluster.kubectl("explain", resource).stdout
    description = model.model_fields[field].description or ""
    assert description
    assert " ".join(description.split()) in " ".join(output.split())


def test_kubectl_get_wide_names_the_units_of_its_numbers(
    cluster: Cluster, objects: client.CustomObjectsApi, namespace: str
) -> None:
    _examples_with_a_full_policy_status(cluster, objects, namespace)
    output = cluster.kubectl("get", "rp", "-n", namespace, "-o", "wide").stdout
    header, rows = _table(output)
    spent = FULL_POLICY_STATUS["budget"]["spentUsd"]
    assert rows["internal-restricted"][header.index("SPENT(USD)")] == str(spent)
    assert "LATENCY(MS)" in _table(cluster.kubectl("get", "be", "-n", namespace).stdout)[0]


PASSWORD = "s3cret-pw"
USERINFO_BACKEND = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "Backend",
    "metadata": {"name": "stored-before-the-rule"},
    "spec": {"type": "ollama", "url": f"http://admin:{PASSWORD}@ollama.llm:11434"},
}


@contextmanager
def _backend_crd_without_the_user_info_rule(
    cluster: Cluster, objects: client.CustomObjectsApi, namespace: str
) -> Iterator[None]:
    """The Backend CRD as it was before `url` refused user-info; the generated one is back (and
    refusing again) on exit, for the tests after this one."""
    crd = crdgen.crd(crdgen.BACKEND)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    url = schema["properties"]["spec"]["properties"]["url"]
    url["x-kubernetes-validations"] = [
        rule for rule in url["x-kubernetes-validations"] if "user-info" not in rule["message"]
    ]
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(crd))
    try:
        yield
    finally:
        install_crds(cluster)
        wait_for(lambda: _user_info_refused(objects, namespace), timeout=60)


def _user_info_refused(objects: client.CustomObjectsApi, namespace: str) -> bool:
    body = {**USERINFO_BACKEND, "metadata": {"name": "dry-run"}}
    try:
        objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "backends", body, dry_run="All"
        )
    except client.ApiException as refused:
        return "must not contain user-info" in str(refused.body)
    return False


def test_kubectl_get_wide_never_shows_the_password_of_a_url_stored_with_one(
    cluster: Cluster, objects: client.CustomObjectsApi, namespace: str
) -> None:
    with _backend_crd_without_the_user_info_rule(cluster, objects, namespace):
        wait_for(
            lambda: objects.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "backends", USERINFO_BACKEND
            ),
            timeout=60,
        )
    stored = _get(objects, namespace=namespace, kind="Backend", name="stored-before-the-rule")
    assert PASSWORD in stored["spec"]["url"]  # the object really holds one
    for args in (["-o", "wide"], []):
        output = cluster.kubectl("get", "be", "-n", namespace, *args).stdout
        header, rows = _table(output)
        assert "stored-before-the-rule" in rows
        assert "URL" not in header
        assert PASSWORD not in output
