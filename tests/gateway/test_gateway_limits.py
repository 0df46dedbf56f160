"""Budgets and capacity through a real Envoy: spend taken from real responses moves a policy
to SoftLimit then HardLimit and the next request is refused with the reason; a full backend
answers 429 with Retry-After. Each test runs its own gateway (its own spend and slots)."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from nexus_operator.cli.cmd_envoy_config import EnvoyOptions
from nexus_testkit.localcluster.standins import NAME_HEADER, StandIns

from .conftest import (
    BODY_MODES,
    HELLO,
    backend,
    held_stream,
    policy,
    priced_and_budgeted,
    refused_for_the_budget,
    run_gateway,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.mark.parametrize("body_mode", BODY_MODES)
def test_spend_from_responses_moves_the_budget_to_soft_then_hard_limit_then_refuses(
    stand_ins: StandIns, tmp_path: Path, body_mode: str
) -> None:
    server = stand_ins.start("openai", ("priced-model",), name=f"priced-{body_mode}")
    documents = priced_and_budgeted(server)
    with run_gateway(tmp_path, documents, body_mode=body_mode) as gateway:
        client = gateway.client()
        labels = {"namespace": "default", "policy": "budgeted"}

        def spent_is(usd: float) -> None:
            gateway.wait_for_metric(
                "nexus_budget_spent_usd",
                lambda value: value is not None and abs(value - usd) < 0.01,
                **labels,
            )

        def state_is(state: str) -> None:
            gateway.wait_for_metric(
                "nexus_budget_state", lambda value: value == 1, state=state, **labels
            )

        first = client.chat.completions.with_raw_response.create(
            model="priced-model", messages=HELLO
        )
        assert first.headers["x-nexus-budget"] == "Normal"
        spent_is(1.0)
        state_is("Normal")  # 1 USD of 2.50
        stream = client.chat.completions.create(
            model="priced-model",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
        assert [chunk for chunk in stream if chunk.usage is not None]
        spent_is(2.0)
        state_is("SoftLimit")  # 80 % >= 50 %
        third = client.chat.completions.with_raw_response.create(
            model="priced-model", messages=HELLO
        )
        assert third.headers["x-nexus-budget"] == "SoftLimit", "the state before this request"
        spent_is(3.0)
        state_is("HardLimit")
        error = refused_for_the_budget(gateway, server)
        assert error["nexus"]["policy"].endswith("budgeted")


@pytest.mark.parametrize("body_mode", BODY_MODES)
def test_a_full_backend_queues_with_429_and_retry_after(
    stand_ins: StandIns, tmp_path: Path, body_mode: str
) -> None:
    server = stand_ins.start("openai", ("busy-model",), name=f"busy-{body_mode}")
    documents = [
        backend("busy", server, [{"id": "busy-model"}], maxConcurrency=1),
        policy("everything", ["*"]),
    ]
    with run_gateway(tmp_path, documents, body_mode=body_mode) as gateway:
        with held_stream(gateway, server, backend="busy", model="busy-model") as holding:
            assert holding.headers[NAME_HEADER] == server.name
            with pytest.raises(openai.RateLimitError) as queued:
                gateway.client().chat.completions.create(model="busy-model", messages=HELLO)
        retry_after = queued.value.response.headers["retry-after"]
        assert retry_after.isdigit()
        assert int(retry_after) >= 1
        assert queued.value.response.json()["error"]["code"]
        # the held stream was closed by the client: the slot frees and requests flow again
        gateway.wait_for_in_flight("busy", 0)
        done = gateway.client().chat.completions.create(model="busy-model", messages=HELLO)
        assert done.choices[0].message.content


@pytest.mark.parametrize("body_mode", BODY_MODES)
def test_a_body_over_the_limit_is_413_in_openai_format_and_never_forwarded(
    stand_ins: StandIns, tmp_path: Path, body_mode: str
) -> None:
    server = stand_ins.start("openai", ("small-model",), name=f"small-{body_mode}")
    documents = [backend("small", server, [{"id": "small-model"}]), policy("everything", ["*"])]
    limit = 100_000
    with run_gateway(
        tmp_path,
        documents,
        body_mode=body_mode,
        options=EnvoyOptions(max_body_bytes=limit),
        picker_args=[f"--gateway-max-body-bytes={limit}"],
    ) as gateway:
        big = [{"role": "user", "content": "x" * (limit + 1000)}]
        with pytest.raises(openai.APIStatusError) as refused:
            gateway.client().chat.completions.create(model="small-model", messages=big)  # type: ignore[arg-type]
        assert refused.value.status_code == 413
        assert refused.value.response.json()["error"]["type"] == "invalid_request_error"
        assert server.received == []
        small = gateway.client().chat.completions.create(model="small-model", messages=HELLO)
        assert small.choices[0].message.content
