"""RequestRequirements: an immutable value built like the dataclass it is declared as."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle

import pytest

from nexus_operator.api import Privacy
from nexus_operator.pipeline import requirements
from nexus_operator.routing import RequestRequirements


def test_the_constructor_has_the_signature_and_defaults_of_the_declared_fields() -> None:
    fields = dataclasses.fields(RequestRequirements)
    declared = dataclasses.make_dataclass(
        "Declared", [(f.name, f.type, f) for f in fields], frozen=True, slots=True
    )
    assert inspect.signature(RequestRequirements) == inspect.signature(declared)
    made = RequestRequirements(model="m")
    assert all(getattr(made, f.name) == f.default for f in fields if f.name != "model")


def test_positional_and_keyword_construction_build_equal_values() -> None:
    by_keyword = RequestRequirements(
        model="m", estimated_tokens=7, privacy=Privacy.RESTRICTED, min_tier=2, request_id="r"
    )
    by_position = RequestRequirements(
        "m", 7, False, False, False, None, Privacy.RESTRICTED, 2, False, "default", "r"
    )
    assert by_keyword == by_position
    assert hash(by_keyword) == hash(by_position)
    assert by_keyword != dataclasses.replace(by_position, min_tier=3)


def test_requirements_stay_immutable_and_copy_pickle_and_replace_like_a_dataclass() -> None:
    made = RequestRequirements(model="m", only_backends=frozenset({"a"}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.model = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        RequestRequirements(model="m", unknown=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        RequestRequirements()  # type: ignore[call-arg]
    assert not hasattr(made, "__dict__")
    assert pickle.loads(pickle.dumps(made)) == made
    assert copy.copy(made) == made
    assert dataclasses.replace(made, namespace="ns").namespace == "ns"
    assert repr(made).startswith("RequestRequirements(model='m', estimated_tokens=0,")


def test_only_plain_fields_get_the_slot_filling_constructor() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class WithFactory:
        items: list[str] = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError, match="only plain fields"):
        requirements._slot_filling_init(WithFactory)
