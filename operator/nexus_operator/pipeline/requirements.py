"""What one request needs: the immutable input of a routing decision."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from nexus_operator.api import Privacy

T = TypeVar("T")


def _slot_filling_init(cls: type[T]) -> type[T]:
    """Give a frozen, slotted dataclass an `__init__` that stores each field through its slot
    descriptor, with the generated one's signature and defaults.

    The generated `__init__` of a frozen dataclass stores every field with
    `object.__setattr__(self, name, value)`, which looks the slot up by name on each call; a
    request's requirements are built once per Route call, and calling the descriptors' setters
    directly costs about half as much. Only plain fields (a default value or none, positional
    or keyword) are supported: anything else keeps the dataclass's own `__init__` honest.
    """
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    for field in fields:
        if not field.init or field.kw_only or field.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{field.name}: only plain fields are supported")
    names = [field.name for field in fields]
    parameters = ", ".join(
        name if field.default is dataclasses.MISSING else f"{name}=__default_{name}"
        for name, field in zip(names, fields, strict=True)
    )
    body = "".join(f"        __set_{name}(self, {name})\n" for name in names)
    free = ", ".join([*(f"__set_{name}" for name in names), *(f"__default_{n}" for n in names)])
    source = (
        f"def __make({free}):\n    def __init__(self, {parameters}):\n{body}    return __init__\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, {}, namespace)  # generated from the dataclass's own field names
    make: Callable[..., Callable[..., None]] = namespace["__make"]
    init = make(
        *(getattr(cls, name).__set__ for name in names),
        *(field.default for field in fields),
    )
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = dict(cls.__init__.__annotations__)
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


@_slot_filling_init
@dataclasses.dataclass(frozen=True, slots=True)
class RequestRequirements:
    """The request as the pipeline sees it.

    `min_context_length` is not sent by clients; it carries a primary policy's
    `requiredCapabilities.minContextLength` into fallback attempts so a fallback never loosens it.
    `only_backends`, when set, names the only backends that may serve (the gateway's subset
    hint, resolved to names); every other candidate is excluded as `outside_subset_hint`.
    """

    model: str
    estimated_tokens: int = 0
    needs_vision: bool = False
    needs_tools: bool = False
    needs_json_mode: bool = False
    max_output_tokens: int | None = None
    privacy: Privacy | None = None
    min_tier: int | None = None
    strict: bool = False
    namespace: str = "default"
    request_id: str | None = None
    min_context_length: int = 0
    only_backends: frozenset[str] | None = None

    @property
    def output_tokens(self) -> int:
        """Output tokens a cost estimate assumes: the requested maximum, else half the input."""
        if self.max_output_tokens is not None:
            return self.max_output_tokens
        return self.estimated_tokens // 2


def estimate_tokens(text: str) -> int:
    """The one token estimate for request text (gRPC messages, gateway bodies): len // 4."""
    return len(text) // 4
