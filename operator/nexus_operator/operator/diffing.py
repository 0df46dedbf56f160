"""The smallest JSON merge patch (RFC 7386) that turns what the API server has into what we want.

Only keys present in `desired` are owned by the caller: a key the caller does not mention is never
touched, so the budget ledger and the leader's status writer can share one `status` without
erasing each other. An owned key whose desired value is None is deleted (sent as null) if present.
Lists are compared and sent whole, because merge patches replace lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_diff(observed: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """Return the patch; an empty dict means nothing to write."""
    patch: dict[str, Any] = {}
    for key, want in desired.items():
        have = observed.get(key)
        if want is None:
            if have is not None:
                patch[key] = None
        elif isinstance(want, Mapping) and isinstance(have, Mapping):
            nested = merge_diff(have, want)
            if nested:
                patch[key] = nested
        elif want != have:
            fresh = _without_nulls(want)
            if fresh != {} or have is not None:
                patch[key] = fresh
    return patch


def _without_nulls(value: Any) -> Any:
    """A fresh subtree carries no nulls: there is nothing under it to delete."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value
