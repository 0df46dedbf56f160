"""The last status the API server holds for each object, as seen by watch events and our patches.

Status writers diff against this instead of against what they last sent: our own patch comes
back as a watch event that leaves the diff empty (no feedback loop), another replica's write is
taken into account, and after a restart nothing is rewritten that is already there. An older
event arriving after a newer patch response is ignored (resourceVersions from one etcd are
ordered integers; anything else is accepted as newer).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

JsonObject = dict[str, Any]
ObjectKey = tuple[str, str, str]  # (plural, namespace, name)


@dataclass(frozen=True)
class Observed:
    resource_version: str
    status: JsonObject
    uid: str | None


def key_of(plural: str, body: Mapping[str, Any]) -> ObjectKey:
    metadata = body.get("metadata") or {}
    return (plural, str(metadata.get("namespace") or "default"), str(metadata.get("name")))


class ObservedStatuses:
    def __init__(self) -> None:
        self._items: dict[ObjectKey, Observed] = {}

    def record(self, plural: str, body: Mapping[str, Any]) -> None:
        metadata = body.get("metadata") or {}
        version = str(metadata.get("resourceVersion") or "")
        key = key_of(plural, body)
        current = self._items.get(key)
        if current is not None and _older(version, current.resource_version):
            return
        status = dict(body.get("status") or {})
        self._items[key] = Observed(version, status, metadata.get("uid"))

    def get(self, key: ObjectKey) -> Observed | None:
        return self._items.get(key)

    def forget(self, key: ObjectKey) -> None:
        self._items.pop(key, None)


def _older(candidate: str, current: str) -> bool:
    if candidate.isdigit() and current.isdigit():
        return int(candidate) < int(current)
    return False
