"""A RoutingPolicy compiled for matching: globs, label selector, precedence key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nexus_operator.api import (
    LabelSelector,
    LabelSelectorRequirement,
    RoutingPolicy,
    RoutingPolicySpec,
)
from nexus_operator.pipeline import BackendView

from .compiled_patterns import Glob


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    namespace: str
    name: str
    precedence: int
    spec: RoutingPolicySpec
    globs: tuple[Glob, ...]

    @classmethod
    def compile(cls, policy: RoutingPolicy) -> CompiledPolicy:
        spec = policy.spec
        return cls(
            namespace=policy.metadata.namespace,
            name=policy.metadata.name,
            precedence=spec.precedence,
            spec=spec,
            globs=tuple(Glob.compile(p) for p in spec.model_patterns),
        )

    def match_prefix(self, model: str) -> int | None:
        """Longest literal prefix among the patterns matching `model`; None when none match."""
        best: int | None = None
        for glob in self.globs:
            if glob.matches(model) and (best is None or glob.literal_prefix > best):
                best = glob.literal_prefix
        return best

    def in_scope(self, backend: BackendView) -> bool:
        selector = self.spec.backend_selector
        return selector is None or selector_matches(selector, backend.labels)


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics: every matchLabels pair and every expression must hold."""
    if any(labels.get(key) != wanted for key, wanted in selector.match_labels.items()):
        return False
    return all(_holds(r, labels) for r in selector.match_expressions)


def _holds(requirement: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    present = requirement.key in labels
    value = labels.get(requirement.key)
    operator = requirement.operator
    if operator == "In":
        return value in requirement.values
    if operator == "NotIn":
        return not present or value not in requirement.values
    if operator == "Exists":
        return present
    return not present
