"""Fuzz gateway request bodies: every body gets an answer (routed, or an OpenAI error with a
status from the documented table), the picker never fails the stream, and no slot leaks."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus_operator.routing import Registry

from .extproc import live_gateway, request_body, request_headers
from .fleet import registry_of
from .test_gateway_endpoint import gateway_fleet

pytestmark = pytest.mark.timeout(600)

NAMES = ("local", "second", "busy", "cloud")
KEYS = ["model", "messages", "content", "type", "tools", "max_tokens", "stream", "prompt", "x"]


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Registry, str]]:
    """A live gateway on its own event loop thread, so hypothesis can drive a sync client."""
    registry = registry_of(gateway_fleet())
    ready: list[str] = []
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def run() -> None:
        async with live_gateway(registry, max_body_bytes=4096) as (server, _):
            ready.append(f"127.0.0.1:{server.port}")
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    assert started.wait(30)
    yield registry, ready[0]
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)


@pytest.fixture(scope="module")
def stub(served: tuple[Registry, str]) -> Iterator[Any]:
    with grpc.insecure_channel(served[1]) as channel:
        yield external_processor_pb2_grpc.ExternalProcessorStub(channel)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)
    ),
    max_leaves=20,
)
plausible = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["llama3:8b", "fast", "gpt-4o", "solo", "nope", ""]),
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.just("user"),
                    "content": st.text(max_size=50)
                    | st.text(st.characters(categories=["Cs", "Lo"]), max_size=5)
                    | st.lists(
                        st.fixed_dictionaries(
                            {"type": st.sampled_from(["text", "image_url", "audio"])}
                        ),
                        max_size=3,
                    ),
                }
            ),
            max_size=3,
        ),
    },
    optional={
        "max_tokens": st.integers(min_value=-5, max_value=10**9),
        "tools": st.lists(st.just({"type": "function"}), max_size=2),
        "response_format": st.sampled_from([{"type": "json_object"}, {"type": "text"}, []]),
        "stream": st.sampled_from([True, False, "yes"]),
    },
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    plausible.map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=300, deadline=None)
@given(body=bodies, duplex=st.booleans())
def test_fuzzed_bodies_get_an_answer_and_never_leak_a_slot(
    served: tuple[Registry, str], stub: Any, body: bytes, duplex: bool
) -> None:
    registry, _ = served
    mode = 4 if duplex else 2  # FULL_DUPLEX_STREAMED / BUFFERED
    messages = [request_headers(body_mode=mode), request_body(body)]
    answers = list(stub.Process(iter(messages), timeout=10))
    final = answers[-1]
    if final.WhichOneof("response") == "immediate_response":
        assert final.immediate_response.status.code in {400, 404, 413, 429, 503}
        assert "error" in json.loads(final.immediate_response.body)
    else:
        assert final.WhichOneof("response") == "request_body"
    for name in NAMES:
        assert registry.runtime.backend("default", name).in_flight == 0


@settings(max_examples=100, deadline=None)
@given(
    model=st.sampled_from(["llama3:8b", "fast"]),
    text=st.text(max_size=200),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_full_duplex_bodies_cut_anywhere_reach_the_upstream_whole(
    served: tuple[Registry, str], stub: Any, model: str, text: str, cuts: list[int]
) -> None:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": text}]}).encode()
    points = sorted({min(c, len(body)) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    messages = [request_headers(body_mode=4, content_length=len(body))]
    messages += [request_body(p, end_of_stream=False) for p in pieces[:-1]]
    messages.append(request_body(pieces[-1], end_of_stream=True))
    answers = list(stub.Process(iter(messages), timeout=10))
    assert answers[0].WhichOneof("response") == "request_headers"
    streamed = [a.request_body.response.body_mutation.streamed_response for a in answers[1:]]
    assert [s.end_of_stream for s in streamed][-1]
    upstream = b"".join(s.body for s in streamed)
    assert json.loads(upstream) == {**json.loads(body), "model": "llama3:8b"}
    if model == "llama3:8b":
        assert upstream == body
