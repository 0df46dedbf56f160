"""The gateway survives its parts restarting, and honours the proxy's subset hint."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from nexus_operator.cli.cmd_envoy_config import EnvoyOptions
from nexus_testkit.localcluster.standins import NAME_HEADER, InferenceStandIn, StandIns

from .conftest import HELLO, Gateway, backend, held_stream, policy, run_gateway

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

RECOVERY_S = 20.0


def two_backends(stand_ins: StandIns, tag: str) -> tuple[InferenceStandIn, InferenceStandIn]:
    return (
        stand_ins.start("openai", ("chat-model", "shared-model"), name=f"first-{tag}"),
        stand_ins.start("openai", ("shared-model",), name=f"second-{tag}"),
    )


def documents(first: InferenceStandIn, second: InferenceStandIn) -> list[dict[str, Any]]:
    return [
        backend("first", first, [{"id": "chat-model"}, {"id": "shared-model"}]),
        backend("second", second, [{"id": "shared-model"}]),
        policy("everything", ["*"]),
    ]


def served_by(gateway: Gateway, model: str) -> str:
    raw = gateway.client().chat.completions.with_raw_response.create(model=model, messages=HELLO)
    return str(raw.headers[NAME_HEADER])


def eventually_served(gateway: Gateway, model: str) -> str:
    """The first successful answer after a restart; the failures before it are the outage."""
    deadline = time.monotonic() + RECOVERY_S
    while True:
        try:
            return served_by(gateway, model)
        except (openai.APIStatusError, openai.APIConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_subset_hint_confines_the_pick_to_the_hinted_endpoints(
    stand_ins: StandIns, tmp_path: Path
) -> None:
    first, second = two_backends(stand_ins, "hint")
    options = EnvoyOptions(subset_hint=(second.endpoint,))
    with run_gateway(tmp_path, documents(first, second), options=options) as gateway:
        for _ in range(3):
            assert served_by(gateway, "shared-model") == second.name
        with pytest.raises(openai.APIStatusError) as refused:
            served_by(gateway, "chat-model")  # only `first` serves it, outside the hint
        assert refused.value.status_code == 503
        assert len(first.received) == 0


def test_picker_restart_recovers(stand_ins: StandIns, tmp_path: Path) -> None:
    first, second = two_backends(stand_ins, "picker-restart")
    with run_gateway(tmp_path, documents(first, second)) as gateway:
        assert served_by(gateway, "chat-model") == first.name
        gateway.picker.restart(kill=True)
        assert eventually_served(gateway, "chat-model") == first.name
        gateway.wait_for_metric(
            "nexus_backend_in_flight",
            lambda value: value == 0,
            namespace="default",
            backend="first",
        )


def test_picker_down_fails_closed_with_an_error_not_an_unrouted_request(
    stand_ins: StandIns, tmp_path: Path
) -> None:
    first, second = two_backends(stand_ins, "picker-down")
    with run_gateway(tmp_path, documents(first, second)) as gateway:
        gateway.picker.stop()
        before = len(first.received) + len(second.received)
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "chat-model", "messages": HELLO},
            timeout=30,
        )
        assert response.status_code >= 500
        assert len(first.received) + len(second.received) == before
        gateway.picker.start()
        assert eventually_served(gateway, "chat-model") == first.name


def test_envoy_restart_mid_stream_releases_the_slot_and_recovers(
    stand_ins: StandIns, tmp_path: Path
) -> None:
    first, second = two_backends(stand_ins, "envoy-restart")
    with run_gateway(tmp_path, documents(first, second)) as gateway:
        with held_stream(gateway, first, backend="first", model="chat-model"):
            gateway.envoy.restart()  # the ext_proc stream of the held request is cancelled
        gateway.wait_for_in_flight("first", 0)
        assert eventually_served(gateway, "chat-model") == first.name
