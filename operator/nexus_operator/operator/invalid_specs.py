"""Objects the API server stored but the models reject, remembered so their status can say so.

The CRD schema and the models check the same rules, but an object stored before a rule
tightened stays in etcd (CRD validation ratcheting lets it be). The registry then keeps routing
with the last valid spec, or without the object if it never had one, which `kubectl` would not
show; the leader's status writer turns each record here into Ready=False (InvalidSpec) until a
valid version arrives or the object is deleted.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pydantic

from .observed import ObjectKey

_VALUE_ERROR = "Value error, "


@dataclass(frozen=True)
class InvalidSpec:
    """One rejected object, as of the generation that was rejected."""

    kind: str
    namespace: str
    name: str
    generation: int | None
    uid: str | None
    message: str


def invalid_spec(
    kind: str, body: Mapping[str, Any], *, error: pydantic.ValidationError
) -> InvalidSpec:
    metadata = body.get("metadata") or {}
    return InvalidSpec(
        kind=kind,
        namespace=str(metadata.get("namespace") or "default"),
        name=str(metadata.get("name")),
        generation=metadata.get("generation"),
        uid=metadata.get("uid"),
        message=describe(error),
    )


def describe(error: pydantic.ValidationError) -> str:
    """Each error at its wire path, as `kubectl explain` spells it: `spec.models[1].id: ...`.

    The models alias every field to its camelCase wire name, so pydantic's locations already
    use them; pydantic's "Value error, " prefix adds nothing for the reader.
    """
    return "; ".join(
        f"{_field_path(item['loc'])}: {item['msg'].removeprefix(_VALUE_ERROR)}"
        for item in error.errors(include_url=False)
    )


def _field_path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


class InvalidSpecs:
    """The current rejection of each object that has one, by (plural, namespace, name)."""

    def __init__(self) -> None:
        self._items: dict[ObjectKey, InvalidSpec] = {}

    def note(self, key: ObjectKey, record: InvalidSpec) -> bool:
        """Remember `record`; True when it is news (not already held), so it is logged once."""
        news = self._items.get(key) != record
        self._items[key] = record
        return news

    def clear(self, key: ObjectKey) -> None:
        self._items.pop(key, None)

    def retain(self, keys: Collection[ObjectKey]) -> None:
        """Forget objects a full list no longer shows (their DELETED event was missed)."""
        for key in self._items.keys() - set(keys):
            del self._items[key]

    def get(self, key: ObjectKey) -> InvalidSpec | None:
        return self._items.get(key)

    def items(self) -> list[tuple[ObjectKey, InvalidSpec]]:
        """A copy: the writer awaits between items while watch events change the records."""
        return list(self._items.items())
