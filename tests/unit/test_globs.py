"""Model-pattern globs: every pattern the API admits compiles, malformed classes read as
literals, and a reversed range is rejected by validation and matches nothing in routing."""

from __future__ import annotations

import re

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from routing_factories import backend, policy

from nexus_operator import api
from nexus_operator.api.globs import GLOB_CHARACTERS, REVERSED_RANGE_PATTERN, GlobError, translate
from nexus_operator.api.policy import GLOB_PATTERN
from nexus_operator.routing import Glob, Outcome, Registry, RequestRequirements, RoutingEngine

GLOB_ALPHABET = "ab09._:/@-*?[]{},!z"
# Patterns made of pieces that make classes, ranges and their edge cases common.
GLOB_PIECES = st.lists(
    st.sampled_from(["[", "[!", "]", "-", "a", "z", "0", "*", "!", ",", "{", "}", "z-a", "a-z"]),
    min_size=1,
    max_size=10,
).map("".join)
CLASSES = st.tuples(
    st.sampled_from(["", "x", "[", "[]", "{a,"]),
    st.sampled_from(["[", "[!"]),
    st.lists(st.sampled_from(["]", "-", "--", "a", "z", "!", "[", "z-a", "a-z"]), max_size=6),
    st.sampled_from(["]", "]]", "", "]z-a]", "}"]),
).map(lambda parts: parts[0] + parts[1] + "".join(parts[2]) + parts[3])


@pytest.mark.parametrize(
    ("pattern", "literal"),
    [("[!]", "[!]"), ("[", "["), ("ab[", "ab["), ("[]", "[]"), ("x[!]y", "x[!]y")],
)
def test_unterminated_classes_match_themselves_literally(pattern: str, literal: str) -> None:
    assert Glob.compile(pattern).matches(literal)


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("[]a]", ["]", "a"], ["b", "!"]),
        ("[!]a]", ["b", "!"], ["]", "a"]),
        ("[!!]", ["a", "]"], ["!"]),
        ("[a-]", ["a", "-"], ["b"]),
        ("[-a]", ["a", "-"], ["b"]),
        ("m[0-9]", ["m0", "m9"], ["ma", "m"]),
        ("{a,[,]}x", ["ax", ",x"], ["x", "{x"]),
    ],
)
def test_character_classes_follow_fnmatch_rules(
    pattern: str, matching: list[str], not_matching: list[str]
) -> None:
    glob = Glob.compile(pattern)
    assert [m for m in matching if glob.matches(m)] == matching
    assert [m for m in not_matching if glob.matches(m)] == []


@pytest.mark.parametrize("pattern", ["{a", "gpt-{4o,4", "{a,{b}", "x{a,b}{"])
def test_an_unclosed_brace_is_refused_by_validation_and_matches_nothing_in_routing(
    pattern: str,
) -> None:
    with pytest.raises(ValidationError, match=r"never closed|close every '\{'"):
        api.RoutingPolicySpec.model_validate({"modelPatterns": ["llama*", pattern]})
    glob = Glob.compile(pattern)
    assert [m for m in (pattern, "a", "gpt-4o", "xab") if glob.matches(m)] == []


def test_a_reversed_range_matches_nothing_in_routing() -> None:
    glob = Glob.compile("m[z-a]")
    assert [m for m in ("m", "ma", "mz", "mm", "m[z-a]") if glob.matches(m)] == []


@pytest.mark.parametrize("pattern", ["[z-a]", "x[!b-a]*", "{a,[9-0]}"])
def test_policy_validation_rejects_a_reversed_range_naming_its_index(pattern: str) -> None:
    with pytest.raises(ValidationError, match=re.escape("modelPatterns[1]")):
        api.RoutingPolicySpec.model_validate({"modelPatterns": ["llama*", pattern]})


@pytest.mark.parametrize("pattern", ["[!]", "[", "[]", "[a-a]", "[--z]"])
def test_policy_validation_accepts_malformed_classes_read_as_literals(pattern: str) -> None:
    spec = api.RoutingPolicySpec.model_validate({"modelPatterns": [pattern]})
    assert spec.model_patterns == [pattern]


@given(st.text(alphabet=GLOB_ALPHABET, min_size=1, max_size=12))
def test_any_pattern_of_the_admitted_characters_compiles(pattern: str) -> None:
    assert re.fullmatch(GLOB_PATTERN, pattern)
    assert Glob.compile(pattern).pattern == pattern


def _unvalidated_policy(name: str, patterns: list[str]) -> api.RoutingPolicy:
    valid = policy(name, ["placeholder"])
    spec = valid.spec.model_copy(update={"model_patterns": patterns})
    return valid.model_copy(update={"spec": spec})


@pytest.mark.parametrize("patterns", [["[!]"], ["[z-a]"], ["[", "m[9-0]*", "{[!]}"]])
def test_registry_accepts_policies_with_malformed_globs_and_keeps_routing(
    patterns: list[str],
) -> None:
    reg = Registry()
    reg.replace_all([backend("local")], [_unvalidated_policy("bad", patterns)])
    reg.upsert_policy(_unvalidated_policy("bad2", patterns))
    reg.runtime.backend("default", "local").set_assumed_healthy()
    decision = RoutingEngine(reg).route(RequestRequirements(model="llama3:8b"))
    assert (decision.outcome, decision.policy) == (Outcome.ROUTED, None)


def _translates(pattern: str) -> bool:
    """False when translate rejects a reversed range (an unclosed brace has its own rule)."""
    try:
        translate(pattern)
    except GlobError as error:
        return "reversed" not in str(error)
    return True


@settings(max_examples=2000)
@example("[[]z-a]")
@example("[!-*--!]")
@example("[]-A]")
@given(st.one_of(GLOB_PIECES, CLASSES))
def test_the_cel_rule_regex_finds_exactly_the_reversed_ranges_translate_rejects(
    pattern: str,
) -> None:
    found = re.search(REVERSED_RANGE_PATTERN, pattern) is not None
    event("reversed range" if found else "no reversed range")
    assert found is not _translates(pattern)


def test_the_glob_characters_are_the_ones_the_crd_admits() -> None:
    admitted = {chr(c) for c in range(128) if re.fullmatch(GLOB_PATTERN, chr(c))}
    assert admitted == GLOB_CHARACTERS
