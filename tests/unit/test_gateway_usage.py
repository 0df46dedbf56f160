"""Usage from OpenAI responses: JSON bodies, SSE streams cut anywhere, and the estimate."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nexus_operator.serving.gateway.usage import Usage, UsageMeter


def sse(*events: Any, done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return body + (b"data: [DONE]\n\n" if done else b"")


def meter(content_type: str, *chunks: bytes, prompt: int = 7) -> Usage:
    found = UsageMeter(prompt_estimate=prompt)
    found.start(content_type)
    for chunk in chunks:
        found.feed(chunk)
    return found.result()


def test_json_usage_is_taken_as_reported() -> None:
    body = json.dumps({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 34}})
    assert meter("application/json", body.encode()) == Usage(12, 34, estimated=False)


def test_json_split_over_chunks_is_reassembled() -> None:
    body = json.dumps({"usage": {"prompt_tokens": 1, "completion_tokens": 2}}).encode()
    assert meter("application/json", body[:5], body[5:]) == Usage(1, 2, estimated=False)


def test_json_without_usage_estimates_from_the_message() -> None:
    body = json.dumps({"choices": [{"message": {"content": "x" * 40}}]}).encode()
    assert meter("application/json", body) == Usage(7, 10, estimated=True)


def test_sse_final_usage_chunk_wins() -> None:
    body = sse(
        {"choices": [{"delta": {"content": "hello"}}]},
        {"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 3}},
    )
    assert meter("text/event-stream; charset=utf-8", body) == Usage(100, 3, estimated=False)


@pytest.mark.parametrize("cut", [1, 7, 20, 41, 63])
def test_sse_events_split_anywhere_are_parsed(cut: int) -> None:
    body = sse(
        {"choices": [{"delta": {"content": "a" * 20}}]},
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 5}},
    )
    assert meter("text/event-stream", body[:cut], body[cut:]) == Usage(9, 5, estimated=False)


def test_sse_without_usage_estimates_from_deltas_text_and_tool_arguments() -> None:
    body = sse(
        {"choices": [{"delta": {"content": "a" * 20}}]},
        {"choices": [{"text": "b" * 12}]},
        {"choices": [{"delta": {"tool_calls": [{"function": {"arguments": "c" * 8}}]}}]},
    )
    assert meter("text/event-stream", body, prompt=50) == Usage(50, 10, estimated=True)


def test_a_stream_cut_mid_event_still_counts_what_arrived() -> None:
    body = sse({"choices": [{"delta": {"content": "a" * 40}}]}, done=False)
    assert meter("text/event-stream", body[:-2]).output_tokens == 10


def test_garbage_never_raises_and_estimates_nothing() -> None:
    for content_type in ("application/json", "text/event-stream"):
        found = meter(content_type, b"\xff\x00data: {oops\n", b"data: [1,2]\n\n", b"data: null\n")
        assert found == Usage(7, 0, estimated=True)


def test_a_negative_or_non_integer_usage_is_ignored() -> None:
    body = json.dumps({"usage": {"prompt_tokens": -1, "completion_tokens": "3"}}).encode()
    assert meter("application/json", body).estimated


@pytest.mark.parametrize("lead", [b"", b"\n  "])
def test_without_a_content_type_the_body_tells_json_from_sse(lead: bytes) -> None:
    """A proxy that skips response headers gives the meter the body only."""
    json_body = json.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}).encode()
    stream = sse({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 6}})
    for body, expected in ((json_body, Usage(3, 4, estimated=False)), (stream, Usage(5, 6, False))):
        found = UsageMeter(prompt_estimate=7)
        for chunk in (lead, body[:3], body[3:]):
            found.feed(chunk)
        assert found.result() == expected
