"""`nexus-operator`: run the operator, serve decisions from files, or print the CRDs.

Each subcommand lives in its own module and is imported only when chosen, so
`nexus-operator crds` never loads kopf or grpc.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__

# subcommand -> (module, one-line help). Each module defines add_arguments(parser) and main(args) -> int.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": (
        "nexus_operator.cli.cmd_run",
        "Run the operator against a cluster (kopf + gRPC + metrics).",
    ),
    "serve": (
        "nexus_operator.cli.cmd_serve",
        "Serve gRPC decisions from YAML files, no cluster needed.",
    ),
    "envoy-config": (
        "nexus_operator.cli.cmd_envoy_config",
        "Print an Envoy bootstrap for the gateway (ext_proc picker, endpoint and cloud clusters).",
    ),
    "crds": (
        "nexus_operator.cli.cmd_crds",
        "Print or write the CRDs generated from the API models.",
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the chosen subcommand's module is imported (and so can fail)."""
    parser = argparse.ArgumentParser(
        prog="nexus-operator",
        description="Kubernetes operator that routes LLM requests to inference backends.",
    )
    parser.add_argument("--version", action="version", version=f"nexus-operator {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(sub_parser)
            sub_parser.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    module = getattr(args, "_module", None)
    if module is None:
        parser.print_help()
        return 0 if args.command is None else 2
    return int(module.main(args))


if __name__ == "__main__":
    sys.exit(main())
