"""Code rules the linters do not know, checked over the product's source (operator/)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ROOT / "operator" / "nexus_operator"


def _tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_keyword_only = _tool("check_keyword_only")


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


def test_functions_take_at_most_two_positional_parameters() -> None:
    """STYLE: keyword-only parameters beyond two (tools/check_keyword_only.py; dunders and the
    names in its ALLOWED table, each with its reason, are exempt)."""
    assert list(check_keyword_only.violations(PRODUCT)) == []


def test_every_started_task_is_kept_in_a_name() -> None:
    """The event loop holds tasks weakly: a task whose only reference is dropped can vanish
    mid-run. No create_task/ensure_future call may be a bare statement."""
    bare = [
        f"{path.relative_to(PRODUCT)}:{node.lineno}"
        for path, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Attribute | ast.Name)
        and getattr(node.value.func, "attr", getattr(node.value.func, "id", ""))
        in ("create_task", "ensure_future")
    ]
    assert bare == []
