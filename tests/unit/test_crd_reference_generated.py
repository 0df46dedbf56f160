"""docs/crd-reference.md is generated from the models; a stale copy fails here."""

from __future__ import annotations

from nexus_operator.api.reference import render_reference
from nexus_testkit.localcluster import repo_root


def test_checked_in_crd_reference_matches_the_models() -> None:
    checked_in = (repo_root() / "docs" / "crd-reference.md").read_text(encoding="utf-8")
    assert checked_in == render_reference(), "docs/crd-reference.md is stale: run `make manifests`"


def test_crd_reference_documents_every_spec_field_with_its_rule() -> None:
    text = render_reference()
    assert "| `credentialsSecretRef` | object |" in text
    assert "`credentialsSecretRef` is required for cloud types" in text
    assert "### `spec.selection.weights`" in text
