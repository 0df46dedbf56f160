"""One child process with its log file, stopped by its own PID and nothing else.

Children run in their own session so a Ctrl-C aimed at the parent does not kill
them mid-write; the parent stops them explicitly (terminate, then kill). When the parent dies
without stopping them (SIGKILL), they get SIGTERM from the kernel (`nexus_testkit.lifeline`).
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from nexus_testkit.lifeline import tied_to_this_process

_TAIL_BYTES = 64 * 1024


class ManagedProcess:
    """A named child process whose stdout and stderr go to `log_path` (appended)."""

    def __init__(
        self,
        name: str,
        *,
        argv: Sequence[str],
        log_path: Path,
        death_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        """`death_signal`: what the process gets if this one dies without stopping it."""
        self.name = name
        self.death_signal = death_signal
        self.argv = list(argv)
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    def start(self) -> None:
        """Spawn the process; appending keeps the log of earlier runs after a restart."""
        if self.running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                tied_to_this_process(self.argv, death_signal=self.death_signal),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def exit_code(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def stop(self, *, grace: float = 10.0) -> None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL; a no-op when not running."""
        popen = self._popen
        if popen is None:
            return
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(grace)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        self._popen = None

    def log_tail(self, *, lines: int = 40) -> str:
        """The last `lines` lines of the log, for failure messages."""
        return tail(self.log_path, lines=lines)


def tail(path: Path, *, lines: int) -> str:
    """Last `lines` lines of a possibly large file, reading only its end."""
    if not path.exists():
        return f"({path} does not exist)"
    with path.open("rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - _TAIL_BYTES))
        data = handle.read()
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
