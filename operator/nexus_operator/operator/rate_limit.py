"""A client-side token bucket for status writes (like client-go's QPS/burst)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    """At most `burst` requests at once, refilled at `qps` per second; `acquire` waits its turn.

    Over any window of w seconds it lets through at most burst + qps·w requests.
    """

    def __init__(
        self, qps: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError("qps must be > 0 and burst >= 1")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.qps)
        self._stamp = now

    def wait_s(self) -> float:
        """Seconds until a token is available (0 when one is)."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.qps

    async def acquire(self) -> None:
        async with self._lock:  # first come, first served
            while True:
                wait = self.wait_s()
                if wait <= 0:
                    self._tokens -= 1
                    return
                await asyncio.sleep(wait)
