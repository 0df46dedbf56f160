"""Child processes that die with the process that started them, however it dies.

`tied_to_this_process(argv)` is `argv` started through a tiny launcher (`python -I -S -c`)
that sets Linux's parent-death signal (`prctl(PR_SET_PDEATHSIG, SIGTERM)`, or the signal the
caller names), checks that its
parent is still the process that started it (if that one died in between, it never starts),
and then execs `argv` in place: same pid, and the setting survives the exec. So when `make run`
(or pytest) is killed with SIGKILL and cleans nothing up, etcd, kube-apiserver, the operator
(the demo's, `OperatorProcess`, `Picker`) and Envoy each get SIGTERM and stop their usual
graceful way (the operator's serving workers stop when its link to them closes), and no stale
process keeps a port.

Why a launcher and not `preexec_fn`: that runs Python between fork and exec, which is not safe
in a process with threads (the demo has the stand-ins' loop and gRPC's threads).

Linux sends the signal when the *thread* that forked the child ends, not only the process.
CPython's main thread ends only when the process does (it waits for the other threads, then
exits), so children are tied only when started from the main thread; a child started from
another thread (e.g. asyncio.to_thread's pool, whose threads end on their own) is started
untied, as before. Elsewhere than Linux, `argv` is returned unchanged.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
from collections.abc import Sequence

__all__ = ["tied_to_this_process"]

# Runs as `python -I -S -c LAUNCHER SIGNAL PARENT_PID ARGV...` (no site, no env: ~20 ms).
_LAUNCHER = """\
import ctypes, os, sys
PR_SET_PDEATHSIG = 1
libc = ctypes.CDLL(None, use_errno=True)
death, parent, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
if libc.prctl(PR_SET_PDEATHSIG, death, 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
if os.getppid() != parent:
    sys.exit(f"not starting {argv[0]}: the process that started it ({parent}) has exited")
os.execv(argv[0], argv)
"""


def tied_to_this_process(
    argv: Sequence[str], *, death_signal: signal.Signals = signal.SIGTERM
) -> list[str]:
    """`argv`, to be started so that it gets `death_signal` when this process dies (see the
    module). SIGTERM lets it stop its graceful way; nothing escalates afterwards, so a program
    whose graceful stop can outlast its usefulness (kube-apiserver, once etcd is gone too,
    drains for minutes) should get SIGKILL."""
    command = list(argv)
    if not sys.platform.startswith("linux"):
        return command
    if threading.current_thread() is not threading.main_thread():
        return command
    executable = shutil.which(command[0])
    if executable is None:  # fail here, as Popen would, not in the launcher after the fork
        raise FileNotFoundError(f"no such executable: {command[0]!r}")
    launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(int(death_signal))]
    return [*launcher, str(os.getpid()), executable, *command[1:]]
