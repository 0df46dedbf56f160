"""The chart renders what a reviewing platform team expects, checked offline with the real helm:
lint, schema guards, least-privilege RBAC rules, hardened pods, and generated files in sync."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from chartkit import (
    CHART,
    EVERYTHING_ON,
    GENERATED_CRDS,
    SIDECAR_VALUES,
    HelmTemplate,
    Manifest,
    of_kind,
    one,
)

from nexus_testkit.localcluster import repo_root

pytestmark = pytest.mark.e2e

RunHelm = Callable[..., subprocess.CompletedProcess[str]]
TLS_ONLY = ("--set=tls.enabled=true", "--set=tls.secretName=nexus-grpc-tls")
SERVICE_NAME = "nexus-nexus-operator.nexus-system.svc"
WITH_PROMETHEUS = ("--api-versions=monitoring.coreos.com/v1/ServiceMonitor",)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param((), id="defaults"),
        pytest.param((f"--values={SIDECAR_VALUES}",), id="router-sidecar-example"),
        pytest.param((*EVERYTHING_ON, "--set=serviceMonitor.enabled=true"), id="everything-on"),
        pytest.param(("--set=watchNamespaces={team-a,team-b}",), id="namespaced"),
        pytest.param((*TLS_ONLY, "--set=tls.serverName=nexus.example.com"), id="tls-server-name"),
    ],
)
def test_helm_lint_strict_reports_no_warnings(run_helm: RunHelm, values: tuple[str, ...]) -> None:
    result = run_helm("lint", str(CHART), "--strict", *values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout
    assert "[ERROR]" not in result.stdout


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (("--set=replicaCuont=2",), "additional properties 'replicaCuont' not allowed"),
        (("--set=role=leader",), "value must be one of 'operator', 'router'"),
        (("--set=tls.enabled=true",), "/tls/secretName"),
        (("--set=podDisruptionBudget.enabled=true",), "/replicaCount"),
        (("--set=image.digest=latest",), "/image/digest"),
        (("--set=credentials.refreshSeconds=0",), "/credentials/refreshSeconds"),
        (("--set=rbac.secrets.namespaces={Bad_NS}",), "/rbac/secrets/namespaces/0"),
        (
            ("--set=terminationGracePeriodSeconds=20",),
            "terminationGracePeriodSeconds (20) must be at least "
            "ledger.shutdownFlushTimeoutSeconds + 15 = 30",
        ),
    ],
    ids=[
        "typo",
        "unknown-role",
        "tls-without-secret",
        "pdb-with-one-replica",
        "bad-digest",
        "zero-credentials-refresh",
        "bad-secrets-namespace",
        "grace-shorter-than-the-shutdown",
    ],
)
def test_values_schema_rejects_unsafe_values(
    run_helm: RunHelm, values: tuple[str, ...], message: str
) -> None:
    result = run_helm("template", "nexus", str(CHART), *values)
    assert result.returncode != 0
    assert message in result.stderr


def rules_of(manifest: Manifest) -> list[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples a Role/ClusterRole grants."""
    return [
        (group, resource, verb)
        for rule in manifest["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    ]


def test_cluster_role_reads_custom_resources_and_writes_only_their_status(
    helm_template: HelmTemplate,
) -> None:
    role = one(helm_template(), "ClusterRole")
    group = "nexus.routing.dev"
    kinds = ("backends", "routingpolicies")
    reads = {(group, kind, verb) for kind in kinds for verb in ("get", "list", "watch")}
    status = {(group, f"{kind}/status", verb) for kind in kinds for verb in ("get", "patch")}
    assert set(rules_of(role)) == reads | status | {("events.k8s.io", "events", "create")}


def test_lease_rights_are_limited_to_the_named_lease_except_create(
    helm_template: HelmTemplate,
) -> None:
    manifests = helm_template()
    rules = one(manifests, "Role")["rules"]
    named = [r for r in rules if r.get("resourceNames")]
    assert [(r["resourceNames"], r["verbs"]) for r in named] == [
        (["nexus-nexus-operator"], ["get", "patch"])
    ]
    assert [r["verbs"] for r in rules if not r.get("resourceNames")] == [["create"]]
    args = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--lease-name=nexus-nexus-operator" in args


def test_secret_access_is_get_only_per_namespace_and_never_cluster_wide(
    helm_template: HelmTemplate,
) -> None:
    everywhere = helm_template()
    cluster_rules = [rules_of(r) for r in of_kind(everywhere, "ClusterRole")]
    assert not any(res == "secrets" for rules in cluster_rules for _, res, _ in rules)
    assert not any(
        res == "secrets" for r in of_kind(everywhere, "Role") for _, res, _ in rules_of(r)
    )
    watched = helm_template("--set=watchNamespaces={team-a,team-b}")
    secret_roles = [
        r for r in of_kind(watched, "Role") if r["metadata"]["name"].endswith("-secrets")
    ]
    assert sorted(r["metadata"]["namespace"] for r in secret_roles) == ["team-a", "team-b"]
    assert all(rules_of(r) == [("", "secrets", "get")] for r in secret_roles)
    listed = helm_template("--set=rbac.secrets.namespaces={llm}")
    assert [
        r["metadata"]["namespace"]
        for r in of_kind(listed, "Role")
        if r["metadata"]["name"].endswith("-secrets")
    ] == ["llm"]
    off = helm_template("--set=watchNamespaces={team-a}", "--set=rbac.secrets.enabled=false")
    assert not [r for r in of_kind(off, "Role") if r["metadata"]["name"].endswith("-secrets")]


def test_watch_namespaces_bind_the_role_per_namespace_instead_of_cluster_wide(
    helm_template: HelmTemplate,
) -> None:
    manifests = helm_template("--set=watchNamespaces={team-a,team-b}")
    bindings = of_kind(manifests, "RoleBinding")
    per_namespace = {
        b["metadata"]["namespace"] for b in bindings if b["roleRef"]["kind"] == "ClusterRole"
    }
    assert per_namespace == {"team-a", "team-b"}
    assert of_kind(manifests, "ClusterRoleBinding") == []
    args = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args
    assert "--namespace=team-b" in args


def test_workers_and_serving_limits_reach_the_command_line(helm_template: HelmTemplate) -> None:
    manifests = helm_template(
        "--set=workers=4",
        "--set=grpc.limits.maxConcurrentRpcs=50",
        "--set=grpc.limits.requestReadTimeoutSeconds=3",
    )
    args = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--workers=4" in args
    assert "--max-concurrent-rpcs=50" in args
    assert "--request-read-timeout=3" in args


def test_router_role_gets_no_lease_permissions(helm_template: HelmTemplate) -> None:
    operator_roles = of_kind(helm_template(), "Role")
    assert [
        (g, res) for role in operator_roles for g, res, verb in rules_of(role) if verb == "create"
    ] == [("coordination.k8s.io", "leases")]
    sidecar_roles = of_kind(helm_template(f"--values={SIDECAR_VALUES}"), "Role")
    # Only Secret reads: the router injects the Backends' credentials, and writes no Lease.
    assert [rules_of(r) for r in sidecar_roles] == [[("", "secrets", "get")]]


def test_deployment_is_hardened_and_probes_kopf_liveness_and_grpc_readiness(
    helm_template: HelmTemplate,
) -> None:
    pod = one(helm_template(), "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["grpc"] == {"port": 50051}
    assert container["startupProbe"]["grpc"] == {"port": 50051}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["args"][:2] == ["run", "--role=operator"]


def test_tls_mounts_the_secret_and_probes_readiness_over_tcp(helm_template: HelmTemplate) -> None:
    deployment = one(helm_template(*EVERYTHING_ON), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--tls-client-ca=/etc/nexus-operator/tls/ca.crt" in container["args"]
    assert container["readinessProbe"]["tcpSocket"] == {"port": "grpc"}
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": "nexus-grpc-tls"}} in volumes
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"


def test_service_exposes_grpc_extproc_and_metrics(helm_template: HelmTemplate) -> None:
    ports = {p["name"]: p["port"] for p in one(helm_template(), "Service")["spec"]["ports"]}
    assert ports == {"grpc": 50051, "extproc": 9002, "metrics": 9090}


def test_router_sidecar_example_keeps_grpc_inside_the_pod(helm_template: HelmTemplate) -> None:
    manifests = helm_template(f"--values={SIDECAR_VALUES}")
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["nexus-operator", "gateway"]
    assert "--role=router" in pod["containers"][0]["args"]
    assert [p["name"] for p in one(manifests, "Service")["spec"]["ports"]] == ["metrics", "http"]
    ingress_ports = [
        p["port"]
        for rule in one(manifests, "NetworkPolicy")["spec"]["ingress"]
        for p in rule["ports"]
    ]
    assert "grpc" not in ingress_ports
    assert "extproc" not in ingress_ports


def test_helm_test_hook_checks_grpc_health_of_the_service(helm_template: HelmTemplate) -> None:
    hooks = [
        p
        for p in of_kind(helm_template(), "Pod")
        if p["metadata"]["annotations"]["helm.sh/hook"] == "test"
    ]
    container = one(hooks, "Pod")["spec"]["containers"][0]
    assert "grpc_health.v1" in container["command"][2]
    assert container["command"][3] == "nexus-nexus-operator.nexus-system.svc:50051"


def helm_test_pod(manifests: list[Manifest]) -> Manifest:
    hooks = [
        p
        for p in of_kind(manifests, "Pod")
        if p["metadata"]["annotations"]["helm.sh/hook"] == "test"
    ]
    return one(hooks, "Pod")


def test_helm_test_hook_over_mutual_tls_trusts_the_secret_ca_and_presents_its_certificate(
    helm_template: HelmTemplate,
) -> None:
    pod = helm_test_pod(helm_template(*EVERYTHING_ON))["spec"]
    container = pod["containers"][0]
    assert {"name": "tls", "secret": {"secretName": "nexus-grpc-tls"}} in pod["volumes"]
    assert {"name": "tls", "mountPath": "/etc/nexus-operator/tls", "readOnly": True} in container[
        "volumeMounts"
    ]
    script = container["command"][2]
    for fragment in (
        'root_certificates=read("ca.crt")',
        'private_key=read("tls.key")',
        'certificate_chain=read("tls.crt")',
        '"grpc.ssl_target_name_override", sys.argv[2]',
    ):
        assert fragment in script
    assert container["command"][3:] == [f"{SERVICE_NAME}:50051", SERVICE_NAME]


def test_helm_test_hook_over_server_tls_checks_the_configured_server_name_without_client_cert(
    helm_template: HelmTemplate,
) -> None:
    manifests = helm_template(*TLS_ONLY, "--set=tls.serverName=nexus.example.com")
    container = helm_test_pod(manifests)["spec"]["containers"][0]
    assert 'root_certificates=read("ca.crt")' in container["command"][2]
    assert "tls.key" not in container["command"][2]
    assert container["command"][4] == "nexus.example.com"


def test_notes_show_plaintext_commands_without_tls(render_notes: Callable[..., str]) -> None:
    notes = render_notes()
    assert "grpcurl -plaintext -d" in notes
    assert "nexusctl --address 127.0.0.1:50051 route llama3.2" in notes
    assert "--tls" not in notes


def test_notes_show_tls_commands_that_verify_the_server_name(
    render_notes: Callable[..., str],
) -> None:
    notes = render_notes(*TLS_ONLY)
    tls = f"--tls --ca-file ca.crt --server-name {SERVICE_NAME}"
    assert f"nexusctl --address 127.0.0.1:50051 {tls} route llama3.2" in notes
    assert f"grpcurl -cacert ca.crt -servername {SERVICE_NAME} -d" in notes
    assert "get secret nexus-grpc-tls -o jsonpath='{.data.ca\\.crt}'" in notes
    assert "-plaintext" not in notes
    assert "--cert-file" not in notes


def test_notes_with_mutual_tls_add_a_client_certificate(render_notes: Callable[..., str]) -> None:
    notes = render_notes(*TLS_ONLY, "--set=tls.clientCA=true")
    assert (
        f"--server-name {SERVICE_NAME} --cert-file client.crt --key-file client.key route" in notes
    )
    assert f"-servername {SERVICE_NAME} -cert client.crt -key client.key -d" in notes
    assert "-plaintext" not in notes


def test_optional_resources_render_only_when_enabled(helm_template: HelmTemplate) -> None:
    optional = ("PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor")
    assert not [m for m in helm_template() if m["kind"] in optional]
    everything = helm_template(
        *EVERYTHING_ON, "--set=serviceMonitor.enabled=true", *WITH_PROMETHEUS
    )
    assert sorted(m["kind"] for m in everything if m["kind"] in optional) == sorted(optional)


def test_service_monitor_renders_only_where_its_api_is_served(
    helm_template: HelmTemplate, render_notes: Callable[..., str]
) -> None:
    enabled = "--set=serviceMonitor.enabled=true"
    assert of_kind(helm_template(enabled), "ServiceMonitor") == []
    assert "serves no monitoring.coreos.com/v1 ServiceMonitor" in render_notes(enabled)
    (monitor,) = of_kind(helm_template(enabled, *WITH_PROMETHEUS), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert "ServiceMonitor" not in render_notes(enabled, *WITH_PROMETHEUS)


def test_crds_are_templated_with_keep_policy_from_the_generated_files(
    helm_template: HelmTemplate,
) -> None:
    crds = of_kind(helm_template(), "CustomResourceDefinition")
    assert {c["spec"]["names"]["kind"] for c in crds} == {"Backend", "RoutingPolicy"}
    assert all(c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for c in crds)
    unkept = of_kind(helm_template("--set=crds.keep=false"), "CustomResourceDefinition")
    assert all(
        "helm.sh/resource-policy" not in c["metadata"].get("annotations", {}) for c in unkept
    )
    assert of_kind(helm_template("--set=crds.enabled=false"), "CustomResourceDefinition") == []


def test_chart_crd_files_are_byte_identical_to_generated_crds() -> None:
    copied = {p.name: p.read_bytes() for p in (CHART / "files" / "crds").glob("*.yaml")}
    generated = {p.name: p.read_bytes() for p in GENERATED_CRDS.glob("*.yaml")}
    assert copied == generated, "stale chart CRDs: run `make manifests-install`"


def test_install_manifests_are_rendered_from_the_current_chart(bin_dir: Path) -> None:
    result = subprocess.run(
        [str(repo_root() / "tools" / "render-manifests.sh"), "--check"],
        capture_output=True,
        text=True,
        env={**os.environ, "NEXUS_BIN_DIR": str(bin_dir)},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_as_the_numeric_non_root_user_the_chart_expects(
    helm_template: HelmTemplate,
) -> None:
    """runAsNonRoot needs a numeric USER in the image, and it must be the chart's runAsUser."""
    dockerfile = (repo_root() / "Dockerfile").read_text().splitlines()
    user = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
    pod = one(helm_template(), "Deployment")["spec"]["template"]["spec"]
    security = pod["securityContext"]
    assert user == [f"{security['runAsUser']}:{security['runAsGroup']}"]


def test_credentials_refresh_reaches_the_operator(
    helm_template: HelmTemplate,
) -> None:
    def args(*flags: str) -> list[str]:
        deployment = one(helm_template(*flags), "Deployment")
        return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])

    assert "--credentials-refresh=30" in args()
    assert "--credentials-refresh=5" in args("--set=credentials.refreshSeconds=5")
