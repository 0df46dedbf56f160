"""Keyword-only parameters beyond two (STYLE): list functions taking more positional ones.

Counted: positional-only and ordinary parameters, without `self`/`cls`. Exempt: dunder methods
(their signature is Python's) and the names in ALLOWED, each with the reason it must stay
positional. Usage: python tools/check_keyword_only.py [ROOT ...] (default: the product).
Exit status 1 when a function breaks the rule.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ROOT / "operator" / "nexus_operator"
DEFAULT_ROOTS = (PRODUCT,)
MAX_POSITIONAL = 2
ALLOWED = {
    # The seed quickstart's constructors, called positionally there.
    "routing/router.py:Router.__init__": "seed: Router::new(registry, strategy, weights)",
    # A CredentialStore listener (routing/credentials.py Listener), called positionally.
    "serving/plane/supervisor.py:ServingPlane._on_credential": "CredentialStore listener",
}


def violations(root: Path) -> Iterator[str]:
    for path in sorted(root.rglob("*.py")):
        if "proto" in path.relative_to(root).parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        base = PRODUCT if path.is_relative_to(PRODUCT) else root
        for qualname, node in _functions(tree):
            key = f"{path.relative_to(base).as_posix()}:{qualname}"
            args = [*node.args.posonlyargs, *node.args.args]
            if args and args[0].arg in ("self", "cls"):
                args = args[1:]
            dunder = node.name.startswith("__") and node.name.endswith("__")
            if len(args) > MAX_POSITIONAL and not dunder and key not in ALLOWED:
                yield f"{key}:{node.lineno}: {len(args)} positional parameters"


def _functions(
    tree: ast.AST, prefix: str = ""
) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield f"{prefix}{node.name}", node
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")


def main(argv: list[str]) -> int:
    roots = [Path(a) for a in argv] or list(DEFAULT_ROOTS)
    found = [line for root in roots for line in violations(root)]
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
