"""`nexus-operator envoy-config` renders a complete Envoy bootstrap for the gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from nexus_operator.cli import operator_main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def render(capsys: pytest.CaptureFixture[str], *flags: str) -> dict[str, Any]:
    assert operator_main.main(["envoy-config", "--from-dir", str(EXAMPLES), *flags]) == 0
    document = yaml.safe_load(capsys.readouterr().out)
    assert isinstance(document, dict)
    return document


def manager(document: dict[str, Any]) -> dict[str, Any]:
    (listener,) = document["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    config: dict[str, Any] = hcm["typed_config"]
    return config


def filters(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f["typed_config"] for f in manager(document)["http_filters"]}


def clusters(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in document["static_resources"]["clusters"]}


def test_admin_listens_on_localhost_only(capsys: pytest.CaptureFixture[str]) -> None:
    document = render(capsys, "--admin-port", "19901")
    assert document["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 19901,
    }


def test_listener_address_and_port_come_from_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    document = render(capsys, "--listener-address", "127.0.0.1", "--listener-port", "18080")
    (listener,) = document["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 18080}


def test_ext_proc_fails_closed_and_talks_to_the_picker_over_http2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    document = render(capsys, "--picker-address", "10.1.2.3:9002")
    ext_proc = filters(document)["envoy.filters.http.ext_proc"]
    assert ext_proc["failure_mode_allow"] is False
    assert ext_proc["grpc_service"]["envoy_grpc"]["cluster_name"] == "nexus-picker"
    picker = clusters(document)["nexus-picker"]
    assert "http2_protocol_options" in str(picker["typed_extension_protocol_options"])
    endpoint = picker["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "10.1.2.3", "port_value": 9002}


def test_picker_streams_spread_over_several_connections(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Serving workers share the port (SO_REUSEPORT spreads connections, not streams)."""
    options = clusters(render(capsys))["nexus-picker"]["typed_extension_protocol_options"]
    http = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert http["explicit_http_config"]["http2_protocol_options"]["max_concurrent_streams"] == 8
    assert http["common_http_protocol_options"]["max_requests_per_connection"] == 1000


@pytest.mark.parametrize(
    ("flag", "request_body", "response_body"),
    [
        ("buffered", "BUFFERED", "STREAMED"),
        ("full-duplex-streamed", "FULL_DUPLEX_STREAMED", "FULL_DUPLEX_STREAMED"),
    ],
)
def test_body_mode_sets_the_processing_mode(
    capsys: pytest.CaptureFixture[str], flag: str, request_body: str, response_body: str
) -> None:
    mode = filters(render(capsys, "--body-mode", flag))["envoy.filters.http.ext_proc"][
        "processing_mode"
    ]
    assert mode["request_header_mode"] == "SEND"
    assert mode["response_header_mode"] == "SEND"
    assert mode["request_body_mode"] == request_body
    assert mode["response_body_mode"] == response_body


def test_local_backends_go_through_an_original_destination_cluster_reading_the_header(
    capsys: pytest.CaptureFixture[str],
) -> None:
    endpoints = clusters(render(capsys))["nexus-endpoints"]
    assert endpoints["type"] == "ORIGINAL_DST"
    assert endpoints["lb_policy"] == "CLUSTER_PROVIDED"
    assert endpoints["original_dst_lb_config"] == {
        "use_http_header": True,
        "http_header_name": "x-gateway-destination-endpoint",
    }


def test_each_cloud_backend_gets_a_tls_cluster_with_sni_and_a_header_route(
    capsys: pytest.CaptureFixture[str],
) -> None:
    document = render(capsys, "--upstream-ca", "/tmp/ca.pem")
    openai = clusters(document)["cloud.default.openai"]
    assert openai["type"] == "LOGICAL_DNS"
    tls = openai["transport_socket"]["typed_config"]
    assert tls["sni"] == "api.openai.com"
    assert tls["common_tls_context"]["validation_context"]["trusted_ca"] == {
        "filename": "/tmp/ca.pem"
    }
    assert "cloud.default.anthropic" in clusters(document)
    assert not any(name.startswith("cloud.") and "ollama" in name for name in clusters(document))
    routes = manager(document)["route_config"]["virtual_hosts"][0]["routes"]
    by_cluster = {route["route"]["cluster"]: route for route in routes}
    header = by_cluster["cloud.default.openai"]["match"]["headers"][0]
    assert header == {"name": "x-nexus-upstream", "string_match": {"exact": "default.openai"}}
    assert by_cluster["cloud.default.openai"]["route"]["host_rewrite_literal"] == "api.openai.com"
    assert routes[-1]["route"]["cluster"] == "nexus-endpoints", "the catch-all route comes last"


def test_routes_never_time_out_a_streaming_completion(capsys: pytest.CaptureFixture[str]) -> None:
    hcm = manager(render(capsys))
    assert all(
        r["route"]["timeout"] == "0s" for r in hcm["route_config"]["virtual_hosts"][0]["routes"]
    )
    assert hcm["request_timeout"] == "0s"
    assert hcm["stream_idle_timeout"] == "300s"


def test_client_supplied_routing_headers_are_stripped_before_the_picker(
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = [f["name"] for f in manager(render(capsys))["http_filters"]]
    assert names.index("envoy.filters.http.header_mutation") < names.index(
        "envoy.filters.http.ext_proc"
    )
    mutations = filters(render(capsys))["envoy.filters.http.header_mutation"]["mutations"]
    removed = {m.get("remove") for m in mutations["request_mutations"]}
    assert {"x-gateway-destination-endpoint", "x-nexus-upstream"} <= removed


def test_no_picker_sends_everything_to_one_endpoint_without_ext_proc(
    capsys: pytest.CaptureFixture[str],
) -> None:
    document = render(capsys, "--no-picker", "127.0.0.1:8000")
    assert "envoy.filters.http.ext_proc" not in filters(document)
    assert "nexus-picker" not in clusters(document)
    mutations = filters(document)["envoy.filters.http.header_mutation"]["mutations"]
    appended = [m["append"]["header"] for m in mutations["request_mutations"] if "append" in m]
    assert appended == [{"key": "x-gateway-destination-endpoint", "value": "127.0.0.1:8000"}]


def test_subset_hint_is_set_as_envoy_lb_metadata_and_forwarded_to_the_picker(
    capsys: pytest.CaptureFixture[str],
) -> None:
    document = render(capsys, "--subset-hint", "127.0.0.1:8000")
    metadata = filters(document)["envoy.filters.http.set_metadata"]["metadata"][0]
    assert metadata["metadata_namespace"] == "envoy.lb.subset_hint"
    assert metadata["value"] == {"x-gateway-destination-endpoint-subset": ["127.0.0.1:8000"]}
    ext_proc = filters(document)["envoy.filters.http.ext_proc"]
    assert (
        "envoy.lb.subset_hint" in ext_proc["metadata_options"]["forwarding_namespaces"]["untyped"]
    )


def test_only_the_gateway_namespace_backends_get_cloud_routes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    document = render(capsys, "--namespace", "elsewhere")
    assert not any(name.startswith("cloud.") for name in clusters(document))


@pytest.mark.parametrize("flag", ["--picker-address", "--no-picker", "--subset-hint"])
def test_an_address_without_a_port_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    code = operator_main.main(["envoy-config", "--from-dir", str(EXAMPLES), flag, "nowhere"])
    assert code == 2
    assert flag in capsys.readouterr().err


def test_output_flag_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "envoy.yaml"
    code = operator_main.main(["envoy-config", "--from-dir", str(EXAMPLES), "-o", str(target)])
    assert code == 0
    assert capsys.readouterr().out == ""
    assert yaml.safe_load(target.read_text())["static_resources"]["listeners"]


def test_envoy_buffers_a_little_more_than_the_pickers_body_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    (listener,) = render(capsys, "--max-body-bytes", "100000")["static_resources"]["listeners"]
    assert listener["per_connection_buffer_limit_bytes"] == 100000 + 64 * 1024


def test_skip_response_headers_adds_the_client_headers_from_the_picker_metadata(
    capsys: pytest.CaptureFixture[str],
) -> None:
    document = render(capsys, "--skip-response-headers")
    ext_proc = filters(document)["envoy.filters.http.ext_proc"]
    assert ext_proc["processing_mode"]["response_header_mode"] == "SKIP"
    assert ext_proc["response_attributes"] == ["response.code"]
    assert "nexus.gateway" in ext_proc["metadata_options"]["receiving_namespaces"]["untyped"]
    (host,) = manager(document)["route_config"]["virtual_hosts"]
    added = {h["header"]["key"]: h["header"]["value"] for h in host["response_headers_to_add"]}
    assert added["x-nexus-backend"] == "%DYNAMIC_METADATA(nexus.gateway:x-nexus-backend)%"
    assert set(added) == {
        "x-nexus-backend",
        "x-nexus-model",
        "x-nexus-policy",
        "x-nexus-route-reason",
        "x-nexus-budget",
        "x-nexus-fallback",
    }


def test_by_default_the_picker_gets_response_headers_and_envoy_adds_none(
    capsys: pytest.CaptureFixture[str],
) -> None:
    document = render(capsys)
    ext_proc = filters(document)["envoy.filters.http.ext_proc"]
    assert ext_proc["processing_mode"]["response_header_mode"] == "SEND"
    (host,) = manager(document)["route_config"]["virtual_hosts"]
    assert "response_headers_to_add" not in host
