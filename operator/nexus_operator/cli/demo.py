"""`make run`: start a real local control plane and keep it up until Ctrl-C.

For now it only starts etcd + kube-apiserver and tells you how to reach them;
it grows into the full demo (CRDs, examples, operator, gRPC) later.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from nexus_operator.localcluster import (
    BinariesMissingError,
    ComponentFailedError,
    LocalControlPlane,
    find_bin_dir,
    kubectl_path,
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        plane = LocalControlPlane(find_bin_dir(), _workdir(args.workdir))
        plane.start()
    except (BinariesMissingError, ComponentFailedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        _print_instructions(plane)
        _wait_for_interrupt()
    finally:
        plane.stop()
    print("control plane stopped")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nexus-demo", description=__doc__)
    parser.add_argument("--workdir", type=Path, help="where PKI, etcd data, logs and kubeconfig go")
    return parser


def _workdir(requested: Path | None) -> Path:
    return requested if requested is not None else Path(tempfile.mkdtemp(prefix="nexus-demo-"))


def _print_instructions(plane: LocalControlPlane) -> None:
    print(f"kube-apiserver ready at {plane.server} in {plane.startup_seconds:.1f}s")
    print(f"kubeconfig: {plane.kubeconfig}")
    print(f"logs:       {plane.workdir / 'logs'}")
    print("try:")
    print(f"  {kubectl_path()} --kubeconfig {plane.kubeconfig} get namespaces")
    print("press Ctrl-C to stop", flush=True)


def _wait_for_interrupt() -> None:
    """Block until SIGINT or SIGTERM, so `kill` stops the children as cleanly as Ctrl-C."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_signal)
    stop.wait()


if __name__ == "__main__":
    sys.exit(main())
