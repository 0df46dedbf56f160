"""Generate the Python gRPC stubs of proto/nexus/routing/v1/router.proto (`make proto`).

protoc derives absolute imports from the proto path (`from nexus.routing.v1 import router_pb2`),
which do not resolve inside our package (grpc#29390), so the stubs are generated into a scratch
directory and copied flat into nexus_operator/serving/proto with package-relative imports.
tests/unit/test_proto_generated.py runs this with --out and fails when the checked-in copy differs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO = Path("nexus/routing/v1/router.proto")
DEFAULT_OUT = ROOT / "operator/nexus_operator/serving/proto"
GENERATED = ("router_pb2.py", "router_pb2.pyi", "router_pb2_grpc.py", "router_pb2_grpc.pyi")
ABSOLUTE_IMPORT = "from nexus.routing.v1 import router_pb2"
RELATIVE_IMPORT = "from . import router_pb2"
INIT = '"""Generated gRPC stubs of nexus.routing.v1 (`make proto`); do not edit."""\n'


def generate(out: Path) -> None:
    """Write the stubs and the package __init__ into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        _run_protoc(Path(scratch))
        for name in GENERATED:
            source = Path(scratch) / PROTO.parent / name
            text = source.read_text().replace(ABSOLUTE_IMPORT, RELATIVE_IMPORT)
            (out / name).write_text(text)
    (out / "__init__.py").write_text(INIT)


def _run_protoc(scratch: Path) -> None:
    plugins = str(Path(sys.executable).parent)
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={scratch}",
        f"--grpc_python_out={scratch}",
        f"--plugin=protoc-gen-mypy={shutil.which('protoc-gen-mypy', path=plugins)}",
        f"--plugin=protoc-gen-mypy_grpc={shutil.which('protoc-gen-mypy_grpc', path=plugins)}",
        f"--mypy_out={scratch}",
        f"--mypy_grpc_out={scratch}",
        str(PROTO_ROOT / PROTO),
    ]
    subprocess.run(command, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Output directory.")
    generate(parser.parse_args().out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
