"""`nexus-operator crds`: print the CRDs generated from the API models, or write them to a directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..api import crdgen
from ..api.reference import render_reference


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="write one <plural>.<group>.yaml per kind into DIR instead of printing to stdout",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        metavar="FILE",
        help="also write the Markdown CRD reference (docs/crd-reference.md) to FILE",
    )


def main(args: argparse.Namespace) -> int:
    if args.reference is not None:
        args.reference.write_text(render_reference(), encoding="utf-8")
        print(f"wrote {args.reference}")
    output_dir: Path | None = args.output_dir
    if output_dir is None:
        sys.stdout.write("---\n".join(crdgen.render(kind) for kind in crdgen.KINDS))
        return 0
    output_dir.mkdir(parents=True, exist_ok=True)
    for kind in crdgen.KINDS:
        path = output_dir / crdgen.file_name(kind)
        path.write_text(crdgen.render(kind), encoding="utf-8")
        print(f"wrote {path}")
    return 0
