"""Code rules the linters do not know, checked over the product's source (operator/)."""

from __future__ import annotations

import ast
from pathlib import Path

PRODUCT = Path(__file__).resolve().parents[2] / "operator" / "nexus_operator"


def _modules() -> list[tuple[Path, ast.Module]]:
    return [
        (path, ast.parse(path.read_text(), str(path)))
        for path in sorted(PRODUCT.rglob("*.py"))
        if "proto" not in path.parts
    ]


def test_only_the_budget_model_knows_the_soft_limit_percent() -> None:
    """One budget rule: `api.Budget.state` is the only reader of the soft-limit percentage,
    so routing, status, metrics and the inventory cannot disagree at a threshold."""
    readers = {
        str(path.relative_to(PRODUCT))
        for path, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "soft_limit_percent"
    }
    assert readers == {"api/policy.py"}
