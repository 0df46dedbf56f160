"""The pydantic models reject exactly what the CRDs' schema and CEL rules reject (the same
table drives tests/integration/test_crd_validation.py), and apply the same defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from invalid_manifests import BACKEND_BASE, CLOUD_BASE, INVALID_SPECS, POLICY_BASE, InvalidSpec
from nexus_operator.api import (
    BackendSpec,
    BackendStatus,
    RoutingPolicySpec,
    Weights,
    Zone,
)

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
SPEC_MODELS: dict[str, type[BaseModel]] = {
    "Backend": BackendSpec,
    "RoutingPolicy": RoutingPolicySpec,
}


def _example_objects() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(EXAMPLES_DIR.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d["kind"] in SPEC_MODELS)
    return docs


@pytest.mark.parametrize("case", INVALID_SPECS, ids=[c.id for c in INVALID_SPECS])
def test_model_rejects_invalid_spec_naming_the_field(case: InvalidSpec) -> None:
    with pytest.raises(ValidationError) as raised:
        SPEC_MODELS[case.kind].model_validate(case.spec)
    assert case.field_name in str(raised.value)


def test_the_invalid_table_is_large_enough() -> None:
    assert len(INVALID_SPECS) >= 25
    assert len({c.id for c in INVALID_SPECS}) == len(INVALID_SPECS)


@pytest.mark.parametrize(
    ("kind", "spec"),
    [("Backend", BACKEND_BASE), ("Backend", CLOUD_BASE), ("RoutingPolicy", POLICY_BASE)],
    ids=["local-backend", "cloud-backend", "policy"],
)
def test_the_bases_of_the_invalid_cases_are_valid(kind: str, spec: dict[str, Any]) -> None:
    SPEC_MODELS[kind].model_validate(spec)


@pytest.mark.parametrize(
    "obj", _example_objects(), ids=lambda o: f"{o['kind']}/{o['metadata']['name']}"
)
def test_every_example_is_a_valid_spec(obj: dict[str, Any]) -> None:
    SPEC_MODELS[obj["kind"]].model_validate(obj["spec"])


def test_examples_cover_local_cloud_and_three_policies() -> None:
    kinds = [(o["kind"], o["spec"].get("type")) for o in _example_objects()]
    backend_types = {t for k, t in kinds if k == "Backend"}
    assert backend_types == {"ollama", "vllm", "openai", "anthropic"}
    assert sum(k == "RoutingPolicy" for k, _ in kinds) == 3


@pytest.mark.parametrize(
    ("spec", "zone"),
    [
        ({"type": "ollama", "url": "http://h"}, Zone.RESTRICTED),
        ({**CLOUD_BASE}, Zone.OPEN),
        ({**CLOUD_BASE, "zone": "Restricted"}, Zone.RESTRICTED),
    ],
    ids=["local-type-restricted", "cloud-type-open", "explicit-zone-wins"],
)
def test_effective_zone_defaults_by_type(spec: dict[str, Any], zone: Zone) -> None:
    assert BackendSpec.model_validate(spec).effective_zone is zone


def test_weights_default_to_50_30_20() -> None:
    weights = RoutingPolicySpec.model_validate({}).selection.weights
    assert (weights.priority, weights.load, weights.latency) == (50, 30, 20)


def test_weights_summing_to_100_are_accepted() -> None:
    assert Weights(priority=0, load=0, latency=100).latency == 100


def test_glob_patterns_accept_every_glob_form() -> None:
    patterns = ["gpt-4o", "claude-*", "llava:?b", "m[0-9]", "{a,b}-*", "org/model@v1", "[!x]*"]
    assert RoutingPolicySpec.model_validate({"modelPatterns": patterns}).model_patterns == patterns


def test_status_rejects_two_conditions_of_one_type() -> None:
    condition = {
        "type": "Ready",
        "status": "True",
        "reason": "Accepted",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    with pytest.raises(ValidationError, match="conditions"):
        BackendStatus.model_validate({"conditions": [condition, condition]})
