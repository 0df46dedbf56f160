"""Alias resolution: at most 3 hops; a cycle of any length and longer chains are errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from . import reasons

MAX_ALIAS_HOPS = 3


@dataclass(frozen=True, slots=True)
class AliasResolution:
    """`model` is the resolved name; `chain` lists every name visited, the request first."""

    model: str
    chain: tuple[str, ...]
    error_code: str | None = None
    message: str = ""


def resolve_alias(model: str, aliases: Mapping[str, str]) -> AliasResolution:
    """Follow `aliases` from `model`.

    The chain is followed to its end (bounded by the map's size) so a cycle is reported as a
    cycle even when it is longer than the hop limit.
    """
    chain = [model]
    seen = {model}
    current = model
    while current in aliases:
        current = aliases[current]
        chain.append(current)
        if current in seen:
            return _failure(model, chain, code=reasons.ALIAS_CYCLE, what="alias cycle")
        seen.add(current)
    if len(chain) - 1 > MAX_ALIAS_HOPS:
        return _failure(
            model,
            chain,
            code=reasons.ALIAS_DEPTH_EXCEEDED,
            what=f"alias chain longer than {MAX_ALIAS_HOPS} hops",
        )
    return AliasResolution(model=current, chain=tuple(chain))


def _failure(model: str, chain: list[str], *, code: str, what: str) -> AliasResolution:
    path = " → ".join(chain)
    return AliasResolution(
        model=model, chain=tuple(chain), error_code=code, message=f"{what}: {path}"
    )
