"""Backend URL → where the proxy sends the request: an `ip:port` or, for https, a named upstream.

`http://` Backends are reached through the proxy's original-destination cluster, which needs an
address: IP literals are used as they are, host names are resolved (getaddrinfo on the event
loop's executor) and cached for `ttl_s`. A cached entry past its TTL is still served while a
background refresh runs, so the decision path only ever does a dictionary lookup once the
cache is warm; `warm()` (run by the server every few seconds over the configured namespace's
Backends) keeps it so. Only a Backend never seen before costs one resolution on the request.

`https://` Backends (cloud APIs) cannot go through an original-destination cluster (TLS, SNI,
DNS): they are routed by the header `x-nexus-upstream: <namespace>.<name>`, which the generated
Envoy config matches to a cluster per such Backend.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

DEFAULT_TTL_S = 30.0
NEGATIVE_TTL_S = 5.0
Resolve = Callable[[str, int], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class Target:
    """`endpoint` (ip:port) for plain-HTTP backends; `cloud` True for https ones."""

    endpoint: str | None
    cloud: bool


@dataclass(slots=True)
class _Entry:
    endpoint: str | None
    expires: float


def upstream_name(namespace: str, name: str) -> str:
    """The `x-nexus-upstream` value (and the generated Envoy cluster's match) of a Backend."""
    return f"{namespace}.{name}"


def join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class EndpointResolver:
    def __init__(
        self,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        resolve: Resolve | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_s
        self._resolve = resolve or _getaddrinfo
        self._clock = clock
        self._cache: dict[str, _Entry] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    def cached(self, url: str) -> Target | None:
        """The target from the cache alone (None: never resolved); may start a refresh."""
        parsed = _parse(url)
        if parsed is None:
            return Target(None, cloud=False)
        scheme, host, port = parsed
        if scheme == "https":
            return Target(None, cloud=True)
        literal = _literal(host, port)
        if literal is not None:
            return Target(literal, cloud=False)
        entry = self._cache.get(url)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            self._refresh_later(url, host, port=port)
        return Target(entry.endpoint, cloud=False)

    async def target(self, url: str) -> Target:
        """The target, resolving now when the cache has never seen this URL."""
        found = self.cached(url)
        if found is not None:
            return found
        parsed = _parse(url)
        assert parsed is not None
        _, host, port = parsed
        await self._refresh(url, host, port=port)
        entry = self._cache[url]
        return Target(entry.endpoint, cloud=False)

    async def warm(self, urls: Iterable[str]) -> None:
        """Resolve every URL that is missing or stale (the server calls this periodically)."""
        now = self._clock()
        pending = []
        for url in set(urls):
            parsed = _parse(url)
            if parsed is None or parsed[0] == "https" or _literal(parsed[1], parsed[2]):
                continue
            entry = self._cache.get(url)
            if entry is None or entry.expires <= now:
                pending.append(self._refresh(url, parsed[1], port=parsed[2]))
        if pending:
            await asyncio.gather(*pending)

    async def close(self) -> None:
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _refresh_later(self, url: str, host: str, *, port: int) -> None:
        if url in self._refreshing:
            return
        task = asyncio.get_running_loop().create_task(self._refresh(url, host, port=port))
        self._refreshing[url] = task
        task.add_done_callback(lambda _t: self._refreshing.pop(url, None))

    async def _refresh(self, url: str, host: str, *, port: int) -> None:
        try:
            endpoint = await self._resolve(host, port)
        except (OSError, UnicodeError) as exc:
            logger.warning("cannot resolve %s: %s", host, exc)
            endpoint = None
        previous = self._cache.get(url)
        if endpoint is None and previous is not None and previous.endpoint is not None:
            endpoint = previous.endpoint  # keep the last good address through a DNS blip
        ttl = self._ttl if endpoint is not None else NEGATIVE_TTL_S
        self._cache[url] = _Entry(endpoint, self._clock() + ttl)


def _parse(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        return None
    return scheme, host, port or (443 if scheme == "https" else 80)


def _literal(host: str, port: int) -> str | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return join(str(address), port)


async def _getaddrinfo(host: str, port: int) -> str | None:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    for wanted in (socket.AF_INET, socket.AF_INET6):  # IPv4 first: "localhost" → 127.0.0.1
        for family, _type, _proto, _name, sockaddr in infos:
            if family == wanted:
                return join(str(sockaddr[0]), port)
    return None
