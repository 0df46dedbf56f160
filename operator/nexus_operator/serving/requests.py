"""Validate gRPC requests and turn them into the routing core's request types.

Every check raises InvalidArgument naming the offending field with its proto (snake_case) path,
e.g. `messages[2].content.parts[0].type`, so the caller sees INVALID_ARGUMENT with a message
that says what to fix. The checks are plain comparisons: they run on every Route call.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import secrets
from collections.abc import Sequence
from typing import Literal

from ..api import Privacy
from ..api.base import MODEL_ID_MAX, NAME_MAX
from ..pipeline import estimate_tokens
from ..routing import RequestRequirements, UsageReport
from .proto import router_pb2 as pb

NAMESPACE_MAX = 63
REQUEST_ID_MAX = 128
ROLE_MAX = 64
MESSAGES_MAX = 4096
PARTS_MAX = 1024
TOKENS_MAX = 100_000_000
COST_USD_MAX = 1_000_000.0
DURATION_MS_MAX = 3_600_000.0
DEFAULT_NAMESPACE = "default"

AmountField = Literal["cost_usd", "latency_ms", "ttft_ms"]
# Per-report ceilings: anything above is a client bug, and accepting it would pin a policy's
# monthly spend (or a backend's latency EMA) at an absurd value until the period rolls over.
_AMOUNT_MAX: dict[AmountField, float] = {
    "cost_usd": COST_USD_MAX,
    "latency_ms": DURATION_MS_MAX,
    "ttft_ms": DURATION_MS_MAX,
}

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_PRIVACY = {
    pb.PRIVACY_UNSPECIFIED: None,
    pb.PRIVACY_UNRESTRICTED: Privacy.UNRESTRICTED,
    pb.PRIVACY_RESTRICTED: Privacy.RESTRICTED,
}


class InvalidArgument(ValueError):
    """A request field is malformed; maps to grpc.StatusCode.INVALID_ARGUMENT."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def route_requirements(request: pb.RouteRequest) -> RequestRequirements:
    """The routing core's view of a Route/Explain request, after validating every field."""
    messages = request.messages
    # Most Route callers send the estimate instead of the messages: skip the walk when empty.
    tokens, has_image = _messages_usage(messages) if messages else (0, False)
    estimated = _count(request.estimated_tokens, field="estimated_tokens")
    # Positional, in field order: binding eleven keywords costs ~0.3 µs more on every Route
    # call (test_each_request_field_reaches_its_requirement pins the order).
    return RequestRequirements(
        _model(request.model, field="model"),
        estimated or tokens,
        request.needs_vision or has_image,
        request.needs_tools,
        request.needs_json_mode,
        _max_output_tokens(request),
        _privacy(request.privacy),
        _min_tier(request),
        request.strict,
        _namespace(request.namespace, field="namespace"),
        _request_id(request.request_id, field="request_id") or assigned_request_id(),
    )


class _RequestIds:
    """Unique ids without a uuid per call: 16 random hex digits drawn once per process (serving
    workers are spawned, so each draws its own) and a counter, 32 hex digits in all like a
    uuid4's hex. Unique across processes and replicas with the odds of a 64-bit collision."""

    def __init__(self) -> None:
        self._draw()
        os.register_at_fork(after_in_child=self._draw)  # a forked child draws its own prefix

    def _draw(self) -> None:
        self._template = secrets.token_hex(8) + "%016x"
        self._serial = itertools.count()

    def next(self) -> str:
        return self._template % next(self._serial)


_REQUEST_IDS = _RequestIds()


def assigned_request_id() -> str:
    """The id the server assigns when the client sends none (the proto promises one): echoed in
    the response, so a ReportUsage can free exactly this request's in-flight slot."""
    return _REQUEST_IDS.next()


def usage_report(report: pb.UsageReport) -> UsageReport:
    """The routing core's view of a ReportUsage call, after validating every field."""
    return UsageReport(
        backend=_object_name(report.backend, field="backend", required=True),
        namespace=_namespace(report.namespace, field="namespace"),
        model=_model(report.model, field="model"),
        policy=_object_name(report.policy, field="policy", required=False) or None,
        input_tokens=_count(report.input_tokens, field="input_tokens"),
        output_tokens=_count(report.output_tokens, field="output_tokens"),
        cost_usd=_optional_amount(report, "cost_usd"),
        success=report.success,
        latency_ms=_optional_amount(report, "latency_ms"),
        ttft_ms=_optional_amount(report, "ttft_ms"),
        request_id=_request_id(report.request_id, field="request_id"),
    )


def _model(value: str, *, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "must not be empty")
    if len(value) > MODEL_ID_MAX:
        raise InvalidArgument(field, f"longer than {MODEL_ID_MAX} characters")
    if not value.isprintable() or value != value.strip():
        raise InvalidArgument(field, "must be printable without surrounding whitespace")
    return value


def inventory_namespace(request: pb.InventoryRequest) -> str | None:
    """The namespace to list, None for all; a malformed one is refused like Route's."""
    return _namespace(request.namespace, field="namespace") if request.namespace else None


def _namespace(value: str, *, field: str) -> str:
    if not value:
        return DEFAULT_NAMESPACE
    if len(value) > NAMESPACE_MAX or not _DNS_LABEL.fullmatch(value):
        raise InvalidArgument(field, f"not a namespace name (DNS label, at most {NAMESPACE_MAX})")
    return value


def _object_name(value: str, *, field: str, required: bool) -> str:
    if not value:
        if required:
            raise InvalidArgument(field, "must not be empty")
        return value
    if len(value) > NAME_MAX or not _DNS_SUBDOMAIN.fullmatch(value):
        raise InvalidArgument(field, f"not an object name (DNS subdomain, at most {NAME_MAX})")
    return value


def _request_id(value: str, *, field: str) -> str | None:
    if len(value) > REQUEST_ID_MAX:
        raise InvalidArgument(field, f"longer than {REQUEST_ID_MAX} characters")
    if not value.isprintable():
        raise InvalidArgument(field, "must be printable")
    return value or None


def _count(value: int, *, field: str) -> int:
    if not 0 <= value <= TOKENS_MAX:
        raise InvalidArgument(field, f"must be between 0 and {TOKENS_MAX}")
    return value


def _max_output_tokens(request: pb.RouteRequest) -> int | None:
    if not request.HasField("max_output_tokens"):
        return None
    if not 1 <= request.max_output_tokens <= TOKENS_MAX:
        raise InvalidArgument("max_output_tokens", f"must be between 1 and {TOKENS_MAX}")
    return request.max_output_tokens


def _min_tier(request: pb.RouteRequest) -> int | None:
    if not request.HasField("min_tier"):
        return None
    if not 1 <= request.min_tier <= 5:
        raise InvalidArgument("min_tier", "must be between 1 and 5")
    return request.min_tier


def _privacy(value: pb.Privacy.ValueType) -> Privacy | None:
    try:
        return _PRIVACY[value]
    except KeyError:
        raise InvalidArgument(
            "privacy", f"unknown value {value}; use PRIVACY_RESTRICTED or PRIVACY_UNRESTRICTED"
        ) from None


def _optional_amount(report: pb.UsageReport, field: AmountField) -> float | None:
    if not report.HasField(field):
        return None
    value: float = getattr(report, field)
    ceiling = _AMOUNT_MAX[field]
    if not (math.isfinite(value) and 0 <= value <= ceiling):
        raise InvalidArgument(field, f"must be a number between 0 and {ceiling:g}")
    return value


def _messages_usage(messages: Sequence[pb.ChatMessage]) -> tuple[int, bool]:
    """(estimated tokens, any image part): tokens are Σ len(text) // 4 over text contents."""
    if len(messages) > MESSAGES_MAX:
        raise InvalidArgument("messages", f"more than {MESSAGES_MAX} messages")
    tokens = 0
    has_image = False
    for index, message in enumerate(messages):
        field = f"messages[{index}]"
        if len(message.role) > ROLE_MAX:
            raise InvalidArgument(f"{field}.role", f"longer than {ROLE_MAX} characters")
        if message.WhichOneof("content") == "parts":
            part_tokens, part_image = _parts_usage(message.parts.parts, field=field)
            tokens += part_tokens
            has_image = has_image or part_image
        else:
            tokens += estimate_tokens(message.text)
    return tokens, has_image


def _parts_usage(parts: Sequence[pb.ContentPart], *, field: str) -> tuple[int, bool]:
    if len(parts) > PARTS_MAX:
        raise InvalidArgument(f"{field}.content.parts", f"more than {PARTS_MAX} parts")
    tokens = 0
    has_image = False
    for index, part in enumerate(parts):
        where = f"{field}.content.parts[{index}]"
        if part.type == "text":
            tokens += estimate_tokens(part.text)
        elif part.type == "image_url":
            if not part.image_url.url:
                raise InvalidArgument(f"{where}.image_url.url", "must not be empty")
            has_image = True
        else:
            raise InvalidArgument(
                f"{where}.type", f"must be 'text' or 'image_url', not {part.type!r}"
            )
    return tokens, has_image
