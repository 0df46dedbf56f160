"""The chart's optional observability pieces, rendered by the real helm: the PrometheusRule and
the Grafana dashboard use only metrics the operator exports, render only when enabled (and, for
CRD kinds, only where the API is served), and the cert-manager Certificate covers the names
clients verify."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from types import SimpleNamespace
from typing import cast

import pytest
from chartkit import HelmTemplate, of_kind
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from nexus_operator.operator.budget_ledger import BudgetLedger
from nexus_operator.operator.metrics import StatusWriterCollector
from nexus_operator.operator.rate_limit import TokenBucket
from nexus_operator.operator.status_writer import ORDER, StatusWriter
from nexus_operator.operator.write_queue import WriteQueue
from nexus_operator.routing import Registry
from nexus_operator.serving.metrics import RoutingMetrics

pytestmark = pytest.mark.e2e

PROMETHEUS_RULE_API = "--api-versions=monitoring.coreos.com/v1/PrometheusRule"
CERT_MANAGER_API = "--api-versions=cert-manager.io/v1/Certificate"
TLS = ("--set=tls.enabled=true", "--set=tls.secretName=nexus-grpc-tls")
ISSUER = ("--set=tls.certManager.enabled=true", "--set=tls.certManager.issuerRef.name=ca")


def exported_series_names() -> set[str]:
    """Every series name the operator's /metrics can carry."""
    names: set[str] = set()
    writer = SimpleNamespace(
        staleness_s=lambda: 0.0, queue=WriteQueue(len(ORDER)), limiter=TokenBucket(1.0, 1)
    )
    status = StatusWriterCollector(
        cast(StatusWriter, writer), cast(BudgetLedger, SimpleNamespace(patches=0))
    )
    for family in [*RoutingMetrics(Registry()).collect(), *status.collect()]:
        if isinstance(family, CounterMetricFamily):
            names.add(f"{family.name}_total")
        elif isinstance(family, HistogramMetricFamily):
            names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "count", "sum")}
        else:
            names.add(family.name)
    return names


def referenced(expressions: list[str]) -> set[str]:
    return {name for expr in expressions for name in re.findall(r"\bnexus_\w+", expr)}


def test_prometheus_rule_alerts_only_on_exported_metrics(helm_template: HelmTemplate) -> None:
    manifests = helm_template(
        "--set=prometheusRule.enabled=true", "--set-json=prometheusRule.rejectedRatio=0.4",
        PROMETHEUS_RULE_API,
    )  # fmt: skip
    (rule,) = of_kind(manifests, "PrometheusRule")
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert {r["alert"] for r in rules} >= {
        "NexusBackendUnhealthy", "NexusBudgetSoftLimit", "NexusBudgetExhausted",
        "NexusHighRejectionRatio", "NexusGrpcInternalErrors", "NexusStatusUrgentWritesStale",
    }  # fmt: skip
    exprs = [str(r["expr"]) for r in rules]
    assert referenced(exprs) <= exported_series_names()
    ratio = next(r for r in rules if r["alert"] == "NexusHighRejectionRatio")
    assert str(ratio["expr"]).rstrip().endswith("> 0.4")
    assert 'outcome="REJECTED"' in ratio["expr"]


def test_prometheus_rule_alerts_on_the_urgent_status_queue_age_not_on_counters(
    helm_template: HelmTemplate,
) -> None:
    manifests = helm_template(
        "--set=prometheusRule.enabled=true", "--set-json=prometheusRule.statusUrgentAgeSeconds=45",
        "--set=prometheusRule.statusUrgentAgeFor=3m", PROMETHEUS_RULE_API,
    )  # fmt: skip
    (rule,) = of_kind(manifests, "PrometheusRule")
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    (stale,) = [r for r in rules if r["alert"] == "NexusStatusUrgentWritesStale"]
    assert stale["expr"] == (
        'max by (namespace, pod) (nexus_status_queue_age_seconds{class="urgent"}) > 45'
    )
    assert stale["for"] == "3m"
    assert stale["labels"]["severity"] == "warning"
    assert "45 s" in stale["annotations"]["summary"]
    assert not [r for r in rules if 'class="counters"' in str(r["expr"])]


def test_prometheus_rule_renders_only_when_enabled_and_served(
    helm_template: HelmTemplate, render_notes: Callable[..., str]
) -> None:
    assert of_kind(helm_template(PROMETHEUS_RULE_API), "PrometheusRule") == []
    assert of_kind(helm_template("--set=prometheusRule.enabled=true"), "PrometheusRule") == []
    assert "serves no monitoring.coreos.com/v1 PrometheusRule" in render_notes(
        "--set=prometheusRule.enabled=true"
    )


def test_grafana_dashboard_is_valid_json_on_exported_metrics(helm_template: HelmTemplate) -> None:
    assert of_kind(helm_template(), "ConfigMap") == []
    (config_map,) = of_kind(helm_template("--set=grafanaDashboard.enabled=true"), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["nexus-operator.json"])
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    names = referenced(exprs)
    assert names <= exported_series_names()
    for wanted in (
        "nexus_route_decisions_total",
        "nexus_fallbacks_total",
        "nexus_reconciler_exclusions_total",
        "nexus_usage_tokens_total",
        "nexus_usage_spend_usd_total",
        "nexus_budget_state",
        "nexus_build_info",
    ):
        assert wanted in names, wanted  # fmt: skip
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_cert_manager_certificate_covers_the_verified_names(
    helm_template: HelmTemplate, render_notes: Callable[..., str]
) -> None:
    assert of_kind(helm_template(*TLS, *ISSUER), "Certificate") == []
    assert "serves no cert-manager.io/v1 Certificate" in render_notes(*TLS, *ISSUER)
    (cert,) = of_kind(
        helm_template(*TLS, *ISSUER, "--set=tls.serverName=nexus.example.com", CERT_MANAGER_API),
        "Certificate",
    )
    spec = cert["spec"]
    assert spec["secretName"] == "nexus-grpc-tls"
    assert "nexus.example.com" in spec["dnsNames"]
    assert "nexus-nexus-operator.nexus-system.svc" in spec["dnsNames"]
    assert "client auth" not in spec["usages"]
    assert spec["issuerRef"] == {"name": "ca", "kind": "Issuer", "group": "cert-manager.io"}
    (mutual,) = of_kind(
        helm_template(*TLS, *ISSUER, "--set=tls.clientCA=true", CERT_MANAGER_API), "Certificate"
    )
    assert "client auth" in mutual["spec"]["usages"]
