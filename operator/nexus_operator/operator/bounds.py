"""Fit free text into the length bounds of the status schema.

Probe errors quote the Backend's URL (up to 2048 characters) and exclusion reasons quote probe
errors, so unbounded text would fail pydantic validation (and the API server's schema) and stop
the whole status write. Every text the operator puts into status passes through `clip`.
"""

from __future__ import annotations

from nexus_operator.api.base import MESSAGE_MAX

ELLIPSIS = "..."


def clip(text: str, limit: int = MESSAGE_MAX) -> str:
    """`text` cut to `limit` characters, marked with a trailing ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: limit - len(ELLIPSIS)] + ELLIPSIS
