"""Polling a component's health endpoint until it answers 200.

A component that exits while we wait fails at once with its log tail, instead of
leaving the caller to time out and guess why.
"""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request

from nexus_testkit.localcluster.process import ManagedProcess

_POLL_INTERVAL = 0.1
_REQUEST_TIMEOUT = 2.0


class ComponentFailedError(RuntimeError):
    """A control-plane component exited or never became ready."""


def wait_until_ready(
    url: str,
    *,
    process: ManagedProcess,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Block until GET `url` returns 200; raise with the log tail on exit or timeout."""
    deadline = time.monotonic() + timeout
    last_error = "no response yet"
    while time.monotonic() < deadline:
        if not process.running():
            raise ComponentFailedError(
                f"{process.name} exited with code {process.exit_code()} before it was ready; "
                f"log {process.log_path}:\n{process.log_tail()}"
            )
        ok, last_error = _probe(url, ssl_context)
        if ok:
            return
        time.sleep(_POLL_INTERVAL)
    raise ComponentFailedError(
        f"{process.name} not ready at {url} after {timeout:.0f}s ({last_error}); "
        f"log {process.log_path}:\n{process.log_tail()}"
    )


def _probe(url: str, ssl_context: ssl.SSLContext | None) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=_REQUEST_TIMEOUT, context=ssl_context) as response:
            return response.status == 200, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (OSError, ssl.SSLError) as exc:
        return False, str(exc)
