"""`nexusctl`: ask the routing endpoint for decisions (placeholder until the gRPC issue lands)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nexusctl", description="Talk to the nexus-operator gRPC endpoint.")
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
