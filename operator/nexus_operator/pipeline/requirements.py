"""What one request needs: the immutable input of a routing decision."""

from __future__ import annotations

from dataclasses import dataclass

from nexus_operator.api import Privacy


@dataclass(frozen=True, slots=True)
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
