"""Token usage from an OpenAI response as it streams past: JSON bodies and SSE streams.

JSON or SSE is known from the content-type when the proxy sends response headers, else
from the body's first non-blank byte (`{` or `[` is JSON). A JSON response's `usage` (prompt_tokens, completion_tokens) is taken as is. An SSE stream
(`text/event-stream`) reports usage in its final chunk when the client asked for it
(`stream_options.include_usage`); otherwise, or when a response has no usage at all, output
tokens are estimated from the generated text (len // 4, as `pipeline.estimate_tokens`) and input tokens are
the request's estimate, and the result is marked `estimated`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

JSON_BODY_MAX = 8 * 1024 * 1024
SSE_LINE_MAX = 1024 * 1024
_TOKENS_MAX = 100_000_000


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int
    estimated: bool


class UsageMeter:
    """Feed it response body chunks in order; `result()` at any time (a cut stream included)."""

    __slots__ = (
        "_body",
        "_chars",
        "_overflow",
        "_prompt_estimate",
        "_sse",
        "_tail",
        "_typed",
        "_usage",
    )

    def __init__(self, *, prompt_estimate: int) -> None:
        self._prompt_estimate = prompt_estimate
        self._sse = False
        self._typed = False  # JSON or SSE known (from content-type, or the body's first byte)
        self._body = bytearray()
        self._overflow = False
        self._tail = b""
        self._chars = 0
        self._usage: tuple[int, int] | None = None

    def start(self, content_type: str) -> None:
        """From the response headers: SSE or not."""
        self._sse = "text/event-stream" in content_type.lower()
        self._typed = True

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if not self._typed:
            head = chunk.lstrip()
            if not head:
                self._pending(chunk)
                return
            # A JSON body starts with `{` (or `[`); an SSE stream with a field or a comment.
            self._sse = head[:1] not in (b"{", b"[")
            self._typed = True
            if self._body:
                chunk = bytes(self._body) + chunk
                self._body.clear()
        if self._sse:
            self._feed_sse(chunk)
        elif not self._overflow:
            if len(self._body) + len(chunk) > JSON_BODY_MAX:
                self._overflow = True
                self._body.clear()
            else:
                self._body += chunk

    def _pending(self, chunk: bytes) -> None:
        """Leading whitespace before the body's type is known: kept (bounded) for later."""
        if len(self._body) + len(chunk) <= SSE_LINE_MAX:
            self._body += chunk

    def result(self) -> Usage:
        if not self._sse and self._body:
            self._parse_json(bytes(self._body))
            self._body.clear()
        elif self._sse and self._tail:
            self._sse_line(self._tail)
            self._tail = b""
        if self._usage is not None:
            return Usage(self._usage[0], self._usage[1], estimated=False)
        # pipeline.estimate_tokens is len // 4; the text itself is never kept.
        return Usage(self._prompt_estimate, self._chars // 4, estimated=True)

    def _feed_sse(self, chunk: bytes) -> None:
        data = self._tail + chunk if self._tail else chunk
        lines = data.split(b"\n")
        tail = lines.pop()
        self._tail = tail if len(tail) <= SSE_LINE_MAX else b""
        for line in lines:
            self._sse_line(line)

    def _sse_line(self, line: bytes) -> None:
        line = line.strip()
        if not line.startswith(b"data:"):
            return
        payload = line[5:].strip()
        if not payload or payload == b"[DONE]":
            return
        try:
            event = json.loads(payload)
        except (ValueError, RecursionError):
            return
        if isinstance(event, dict):
            self._take_usage(event.get("usage"))
            self._count_text(event.get("choices"), delta=True)

    def _parse_json(self, body: bytes) -> None:
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            return
        if isinstance(document, dict):
            self._take_usage(document.get("usage"))
            self._count_text(document.get("choices"), delta=False)

    def _take_usage(self, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        prompt = _count(usage.get("prompt_tokens"))
        completion = _count(usage.get("completion_tokens"))
        if prompt is not None or completion is not None:
            self._usage = (prompt or 0, completion or 0)

    def _count_text(self, choices: object, *, delta: bool) -> None:
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            self._chars += _text_length(choice.get("text"))
            message = choice.get("delta" if delta else "message")
            if isinstance(message, dict):
                self._chars += _text_length(message.get("content"))
                self._chars += _tool_call_length(message.get("tool_calls"))


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return min(value, _TOKENS_MAX)


def _text_length(value: object) -> int:
    return len(value) if isinstance(value, str) else 0


def _tool_call_length(calls: Any) -> int:
    if not isinstance(calls, list):
        return 0
    total = 0
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            total += _text_length(function.get("arguments"))
    return total
