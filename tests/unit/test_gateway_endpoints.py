"""Backend URL → ip:port (cached, refreshed off the request path) or a cloud upstream."""

from __future__ import annotations

import asyncio

from nexus_operator.serving.gateway.endpoints import EndpointResolver, Target, upstream_name


class FakeDns:
    def __init__(self) -> None:
        self.answers: dict[str, str | None] = {"backend.local": "10.1.2.3"}
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> str | None:
        self.calls.append(host)
        address = self.answers.get(host)
        return None if address is None else f"{address}:{port}"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_ip_literals_and_https_need_no_resolution() -> None:
    dns = FakeDns()
    resolver = EndpointResolver(resolve=dns)
    assert resolver.cached("http://10.0.0.1:8000") == Target("10.0.0.1:8000", cloud=False)
    assert resolver.cached("http://[::1]:9000/v1") == Target("[::1]:9000", cloud=False)
    assert resolver.cached("http://10.0.0.1") == Target("10.0.0.1:80", cloud=False)
    assert resolver.cached("https://api.openai.com/v1") == Target(None, cloud=True)
    assert dns.calls == []


async def test_a_host_name_is_resolved_once_then_served_from_the_cache() -> None:
    dns = FakeDns()
    resolver = EndpointResolver(resolve=dns)
    assert resolver.cached("http://backend.local:8080") is None
    assert await resolver.target("http://backend.local:8080") == Target("10.1.2.3:8080", False)
    assert resolver.cached("http://backend.local:8080") == Target("10.1.2.3:8080", False)
    assert dns.calls == ["backend.local"]


async def test_a_stale_entry_is_served_while_it_refreshes_in_the_background() -> None:
    dns, clock = FakeDns(), Clock()
    resolver = EndpointResolver(resolve=dns, clock=clock, ttl_s=30)
    await resolver.warm(["http://backend.local:80"])
    dns.answers["backend.local"] = "10.9.9.9"
    clock.now = 31
    assert resolver.cached("http://backend.local:80") == Target("10.1.2.3:80", False)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert resolver.cached("http://backend.local:80") == Target("10.9.9.9:80", False)
    await resolver.close()


async def test_a_dns_failure_keeps_the_last_good_address() -> None:
    dns, clock = FakeDns(), Clock()
    resolver = EndpointResolver(resolve=dns, clock=clock)
    await resolver.warm(["http://backend.local:80"])
    dns.answers["backend.local"] = None
    clock.now = 100
    await resolver.warm(["http://backend.local:80"])
    assert resolver.cached("http://backend.local:80") == Target("10.1.2.3:80", False)


async def test_an_unknown_host_resolves_to_no_endpoint() -> None:
    resolver = EndpointResolver(resolve=FakeDns())
    assert await resolver.target("http://nowhere.local:80") == Target(None, cloud=False)


def test_the_upstream_header_names_namespace_and_backend() -> None:
    assert upstream_name("team-a", "openai") == "team-a.openai"
