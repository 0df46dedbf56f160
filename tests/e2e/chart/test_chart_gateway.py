"""The chart exposes the ext_proc endpoint picker, and the InferencePool example points at what
the chart renders (checked offline with the real helm; no gateway implementing InferencePool
runs here)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from chartkit import CHART, HelmTemplate, Manifest, of_kind, one

pytestmark = pytest.mark.e2e

EXAMPLE = CHART / "examples" / "inferencepool.yaml"


def container(manifests: list[Manifest]) -> dict[str, Any]:
    deployment = one(manifests, "Deployment")
    found: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return found


def test_the_picker_port_is_served_and_on_the_service_as_h2c(helm_template: HelmTemplate) -> None:
    manifests = helm_template("--set=watchNamespaces={team-a}")
    ports = {p["name"]: p for p in one(manifests, "Service")["spec"]["ports"]}
    assert ports["extproc"]["port"] == 9002
    assert ports["extproc"]["targetPort"] == "extproc"
    assert ports["extproc"]["appProtocol"] == "kubernetes.io/h2c"
    main = container(manifests)
    assert {"name": "extproc", "containerPort": 9002, "protocol": "TCP"} in main["ports"]
    assert "--extproc-address=0.0.0.0:9002" in main["args"]
    assert "--gateway-namespace=team-a" in main["args"], "defaults to the first watched namespace"


def test_gateway_disabled_turns_the_picker_off_and_drops_the_port(
    helm_template: HelmTemplate,
) -> None:
    manifests = helm_template("--set=gateway.enabled=false", "--set=networkPolicy.enabled=true")
    assert "extproc" not in {p["name"] for p in one(manifests, "Service")["spec"]["ports"]}
    assert "--extproc-address=off" in container(manifests)["args"]
    rules = one(manifests, "NetworkPolicy")["spec"]["ingress"]
    assert all(port["port"] != "extproc" for rule in rules for port in rule["ports"])


def test_network_policy_admits_the_picker_port(helm_template: HelmTemplate) -> None:
    rules = one(helm_template("--set=networkPolicy.enabled=true"), "NetworkPolicy")["spec"][
        "ingress"
    ]
    assert any(port["port"] == "extproc" for rule in rules for port in rule["ports"])


def test_inferencepool_example_references_the_rendered_picker_service(
    helm_template: HelmTemplate,
) -> None:
    pool, route = list(yaml.safe_load_all(EXAMPLE.read_text()))
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    namespace = pool["metadata"]["namespace"]
    manifests = helm_template(
        f"--set=gateway.namespace={namespace}", release="nexus-operator", namespace=namespace
    )
    service = one(manifests, "Service")
    picker = pool["spec"]["endpointPickerRef"]
    assert picker["kind"] == "Service"
    assert picker["name"] == service["metadata"]["name"]
    assert service["metadata"]["namespace"] == namespace, "endpointPickerRef is namespace-local"
    service_ports = {p["port"] for p in service["spec"]["ports"] if p["name"] == "extproc"}
    assert picker["port"]["number"] in service_ports
    assert picker["failureMode"] == "FailClose"
    assert f"--gateway-namespace={namespace}" in container(manifests)["args"]
    (backend_ref,) = route["spec"]["rules"][0]["backendRefs"]
    assert backend_ref["kind"] == "InferencePool"
    assert backend_ref["name"] == pool["metadata"]["name"]
    assert of_kind(manifests, "Deployment")
