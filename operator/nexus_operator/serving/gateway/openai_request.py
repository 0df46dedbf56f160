"""OpenAI-compatible request bodies → the routing core's RequestRequirements (plus stream facts).

Paths: `POST /v1/chat/completions` and `POST /v1/completions` (a query string is ignored);
`GET /v1/models` is answered by the picker from the registry; every other path or method is
answered 404 `unknown_path`. From the body: `model`; the token estimate
(the same `len(text) // 4` over text parts as the gRPC API, `pipeline.estimate_tokens`); vision
from `image_url` parts; tools from a non-empty `tools` or `functions`; JSON mode from
`response_format.type` json_object / json_schema; the output budget from
`max_completion_tokens`, else `max_tokens`. Request headers may only tighten:
`x-nexus-privacy: restricted`, `x-nexus-min-tier: 1..5`, `x-nexus-strict: true`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ...api import Privacy
from ...api.base import MODEL_ID_MAX
from ...pipeline import estimate_tokens
from ...routing import RequestRequirements
from ..requests import MESSAGES_MAX, PARTS_MAX, TOKENS_MAX
from .errors import (
    INVALID_FIELD,
    INVALID_HEADER,
    INVALID_JSON,
    MISSING_MODEL,
    UNKNOWN_PATH,
    GatewayError,
    invalid,
)

CHAT = "chat"
COMPLETIONS = "completions"
MODELS_PATH = "/v1/models"
ENDPOINTS: Mapping[str, str] = {"/v1/chat/completions": CHAT, "/v1/completions": COMPLETIONS}

PRIVACY_HEADER = "x-nexus-privacy"
MIN_TIER_HEADER = "x-nexus-min-tier"
STRICT_HEADER = "x-nexus-strict"
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_JSON_FORMATS = frozenset({"json_object", "json_schema"})


@dataclass(frozen=True, slots=True)
class Tightening:
    """What request headers add to the policy's demands (never loosen)."""

    privacy: Privacy | None = None
    min_tier: int | None = None
    strict: bool = False


@dataclass(slots=True)
class ParsedRequest:
    requirements: RequestRequirements
    document: dict[str, Any]
    stream: bool
    include_usage: bool


def is_model_list(method: str, path: str) -> bool:
    """`GET /v1/models`: the picker answers it itself from the registry."""
    return method == "GET" and path.split("?", 1)[0].rstrip("/") == MODELS_PATH


def model_list(models: Iterable[str]) -> bytes:
    """OpenAI's model list: `{"object": "list", "data": [{"id", "object", "owned_by"}]}`."""
    data = [
        {"id": m, "object": "model", "created": 0, "owned_by": "nexus-operator"} for m in models
    ]
    return json.dumps({"object": "list", "data": data}, separators=(",", ":")).encode()


def endpoint_kind(method: str, path: str) -> str:
    """CHAT or COMPLETIONS; GatewayError 404 for anything else."""
    kind = ENDPOINTS.get(path.split("?", 1)[0])
    if kind is None or method != "POST":
        raise GatewayError(
            404,
            UNKNOWN_PATH,
            f"{method} {path.split('?', 1)[0][:200]} is not served by this gateway; "
            "use POST /v1/chat/completions or POST /v1/completions",
        )
    return kind


def tightening(headers: Mapping[str, str]) -> Tightening:
    """The x-nexus-* request headers; a malformed one is a 400 naming it."""
    privacy: Privacy | None = None
    min_tier: int | None = None
    strict = False
    value = headers.get(PRIVACY_HEADER)
    if value is not None:
        text = value.strip().lower()
        if text == Privacy.RESTRICTED.value:
            privacy = Privacy.RESTRICTED
        elif text != Privacy.UNRESTRICTED.value:
            raise _bad_header(PRIVACY_HEADER, "must be 'restricted' or 'unrestricted'")
    value = headers.get(MIN_TIER_HEADER)
    if value is not None:
        try:
            min_tier = int(value.strip())
        except ValueError:
            min_tier = 0
        if not 1 <= min_tier <= 5:
            raise _bad_header(MIN_TIER_HEADER, "must be an integer between 1 and 5")
    value = headers.get(STRICT_HEADER)
    if value is not None:
        text = value.strip().lower()
        if text not in _TRUE and text not in _FALSE:
            raise _bad_header(STRICT_HEADER, "must be 'true' or 'false'")
        strict = text in _TRUE
    return Tightening(privacy, min_tier, strict)


def _bad_header(name: str, problem: str) -> GatewayError:
    return GatewayError(400, INVALID_HEADER, f"header {name}: {problem}", param=name)


def parse_body(
    body: bytes,
    *,
    kind: str,
    namespace: str,
    tighten: Tightening = Tightening(),
    request_id: str | None = None,
    only_backends: frozenset[str] | None = None,
) -> ParsedRequest:
    """Validate an OpenAI request body; GatewayError (400) names the first bad field."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise invalid(INVALID_JSON, "the request body is not valid JSON") from None
    if not isinstance(document, dict):
        raise invalid(INVALID_JSON, "the request body must be a JSON object")
    model = _model(document.get("model"))
    if kind == CHAT:
        tokens, vision = _messages(document.get("messages"))
    else:
        tokens, vision = _prompt(document.get("prompt")), False
    stream = _flag(document, "stream")
    options = document.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    requirements = RequestRequirements(
        model=model,
        estimated_tokens=min(tokens, TOKENS_MAX),
        needs_vision=vision,
        needs_tools=_non_empty(document, "tools") or _non_empty(document, "functions"),
        needs_json_mode=_json_mode(document.get("response_format")),
        max_output_tokens=_max_output(document),
        privacy=tighten.privacy,
        min_tier=tighten.min_tier,
        strict=tighten.strict,
        namespace=namespace,
        request_id=request_id,
        only_backends=only_backends,
    )
    return ParsedRequest(requirements, document, stream, include_usage)


def rewrite_model(parsed: ParsedRequest, model: str) -> bytes:
    """The body with `model` replaced (compact JSON; every other field unchanged)."""
    document = dict(parsed.document)
    document["model"] = model
    try:
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON) has no UTF-8 form
        return json.dumps(document, separators=(",", ":")).encode()


def _model(value: object) -> str:
    if value is None:
        raise invalid(MISSING_MODEL, "the request body has no 'model'", param="model")
    if not isinstance(value, str) or not value:
        raise invalid(INVALID_FIELD, "'model' must be a non-empty string", param="model")
    if len(value) > MODEL_ID_MAX:
        raise invalid(
            INVALID_FIELD, f"'model' is longer than {MODEL_ID_MAX} characters", param="model"
        )
    if not value.isprintable() or value != value.strip():
        raise invalid(
            INVALID_FIELD,
            "'model' must be printable without surrounding whitespace",
            param="model",
        )
    return value


def _messages(value: object) -> tuple[int, bool]:
    if not isinstance(value, list) or not value:
        raise invalid(INVALID_FIELD, "'messages' must be a non-empty array", param="messages")
    if len(value) > MESSAGES_MAX:
        raise invalid(INVALID_FIELD, f"more than {MESSAGES_MAX} messages", param="messages")
    tokens = 0
    vision = False
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise invalid(
                INVALID_FIELD, "each message must be an object", param=f"messages[{index}]"
            )
        content = message.get("content")
        if isinstance(content, str):
            tokens += estimate_tokens(content)
        elif isinstance(content, list):
            part_tokens, part_vision = _parts(content, index)
            tokens += part_tokens
            vision = vision or part_vision
        elif content is not None:
            raise invalid(
                INVALID_FIELD,
                "'content' must be a string or an array of parts",
                param=f"messages[{index}].content",
            )
    return tokens, vision


def _parts(parts: list[Any], index: int) -> tuple[int, bool]:
    if len(parts) > PARTS_MAX:
        raise invalid(
            INVALID_FIELD, f"more than {PARTS_MAX} parts", param=f"messages[{index}].content"
        )
    tokens = 0
    vision = False
    for position, part in enumerate(parts):
        if not isinstance(part, dict):
            raise invalid(
                INVALID_FIELD,
                "each content part must be an object",
                param=f"messages[{index}].content[{position}]",
            )
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if isinstance(text, str):
                tokens += estimate_tokens(text)
        elif kind == "image_url":
            vision = True
    return tokens, vision


def _prompt(value: object) -> int:
    """Completions prompt: a string, strings, or token arrays (counted as they are)."""
    if value is None:
        raise invalid(INVALID_FIELD, "'prompt' is required", param="prompt")
    if isinstance(value, str):
        return estimate_tokens(value)
    if isinstance(value, list):
        tokens = 0
        for item in value:
            if isinstance(item, str):
                tokens += estimate_tokens(item)
            elif isinstance(item, list):
                tokens += len(item)
            elif isinstance(item, int) and not isinstance(item, bool):
                tokens += 1
            else:
                raise invalid(
                    INVALID_FIELD, "'prompt' has an element of the wrong type", param="prompt"
                )
        return tokens
    raise invalid(INVALID_FIELD, "'prompt' must be a string or an array", param="prompt")


def _flag(document: Mapping[str, Any], name: str) -> bool:
    value = document.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(INVALID_FIELD, f"'{name}' must be a boolean", param=name)
    return value


def _non_empty(document: Mapping[str, Any], name: str) -> bool:
    value = document.get(name)
    if value is None:
        return False
    if not isinstance(value, list):
        raise invalid(INVALID_FIELD, f"'{name}' must be an array", param=name)
    return bool(value)


def _json_mode(value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, dict):
        raise invalid(INVALID_FIELD, "'response_format' must be an object", param="response_format")
    kind = value.get("type")
    return isinstance(kind, str) and kind in _JSON_FORMATS


def _max_output(document: Mapping[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = document.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= TOKENS_MAX:
            raise invalid(
                INVALID_FIELD, f"'{name}' must be an integer between 1 and {TOKENS_MAX}", param=name
            )
        return value
    return None
