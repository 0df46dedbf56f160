"""nexusctl turns bad flags and files into usage errors (exit 2) and prints only what was asked."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry
from routing_factories import backend, engine, policy

from nexus_operator import __version__
from nexus_operator.cli import nexusctl
from nexus_operator.serving import GrpcServer

CLOSED_ADDRESS = "127.0.0.1:1"
NEXUSCTL = (sys.executable, "-m", "nexus_operator.cli.nexusctl")


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    """A real GrpcServer with one backend and one policy, on its own event loop thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = GrpcServer(
        engine([backend("ollama-a")], [policy("everything")]),
        address="127.0.0.1:0",
        metrics_registry=CollectorRegistry(),
    )
    port = asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
    yield f"127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


@pytest.mark.parametrize("given", ["--cert-file", "--key-file"])
def test_a_client_cert_without_its_key_is_a_usage_error_naming_both_flags(
    tmp_path: Path, given: str
) -> None:
    pem = tmp_path / "half.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    result = subprocess.run(
        [*NEXUSCTL, "--address", CLOSED_ADDRESS, given, str(pem), "--timeout", "1", "route", "m"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "--cert-file and --key-file must be given together" in result.stderr


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"role": "user", "content": "hi"}, "messages"),
        (["x"], "messages[0]"),
        ([{"role": "user", "content": ["hi"]}], "messages[0].content[0]"),
        ([{"role": "user", "content": 5}], "messages[0].content"),
        ([{"role": 5, "content": "hi"}], "messages[0].role"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": "http://x"}]}],
            "messages[0].content[0].image_url",
        ),
        ([{"role": "user", "content": [{"type": 1}]}], "messages[0].content[0].type"),
        ([{"content": [{"type": "image_url", "image_url": {"url": 3}}]}], "image_url.url"),
    ],
)
def test_a_messages_file_of_the_wrong_shape_exits_2_naming_the_json_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], document: object, path: str
) -> None:
    messages = tmp_path / "messages.json"
    messages.write_text(json.dumps(document))
    code = nexusctl.main(
        ["--address", CLOSED_ADDRESS, "route", "m", "--messages-file", str(messages)]
    )
    assert code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("nexusctl: messages-file: ")
    assert f"{path}: " in stderr


def test_a_messages_file_that_is_not_json_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    messages = tmp_path / "messages.json"
    messages.write_text("[{")
    code = nexusctl.main(
        ["--address", CLOSED_ADDRESS, "route", "m", "--messages-file", str(messages)]
    )
    assert code == 2
    assert "nexusctl: messages-file: messages: not valid JSON" in capsys.readouterr().err


def test_null_content_and_image_parts_become_proto_messages() -> None:
    converted = nexusctl.chat_messages(
        [
            {"role": "assistant", "content": None},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                ],
            },
        ]
    )
    assert (converted[0].role, converted[0].text) == ("assistant", "")
    parts = converted[1].parts.parts
    assert [(p.type, p.text, p.image_url.url) for p in parts] == [
        ("text", "what is this?", ""),
        ("image_url", "", "https://example.com/a.png"),
    ]


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf", "soon"])
def test_a_timeout_that_is_not_a_positive_finite_number_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], timeout: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        nexusctl.main(["--address", CLOSED_ADDRESS, f"--timeout={timeout}", "get"])
    assert exited.value.code == 2
    assert "argument --timeout" in capsys.readouterr().err


def test_connection_flags_are_accepted_after_the_subcommand_too() -> None:
    args = nexusctl.parse_args(
        ["route", "m", "--address", "h:1", "-o", "json", "--timeout", "2", "--tls"]
    )
    assert (args.address, args.output, args.timeout, args.tls) == ("h:1", "json", 2.0, True)


def test_connection_flags_before_the_subcommand_are_not_reset_by_it() -> None:
    args = nexusctl.parse_args(["--address", "h:1", "-o", "yaml", "--timeout", "2", "get"])
    assert (args.address, args.output, args.timeout, args.tls) == ("h:1", "yaml", 2.0, False)


@pytest.mark.parametrize("output", ["json", "yaml"])
@pytest.mark.parametrize(("kind", "other"), [("backends", "policies"), ("policies", "backends")])
def test_get_one_kind_as_json_or_yaml_prints_only_that_kind(
    address: str, capsys: pytest.CaptureFixture[str], output: str, kind: str, other: str
) -> None:
    assert nexusctl.main(["get", kind, "--address", address, "-o", output]) == 0
    printed = capsys.readouterr().out
    document = json.loads(printed) if output == "json" else yaml.safe_load(printed)
    assert list(document) == [kind]
    assert other not in document


def test_get_all_as_json_prints_both_kinds(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert nexusctl.main(["--address", address, "-o", "json", "get"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [b["ref"]["name"] for b in data["backends"]] == ["ollama-a"]
    assert [p["name"] for p in data["policies"]] == ["everything"]


@pytest.mark.parametrize(
    ("command", "prog"), [("nexusctl", "nexusctl"), ("nexus-operator", "nexus-operator")]
)
def test_version_flag_prints_the_package_version(command: str, prog: str) -> None:
    assert __version__ == importlib.metadata.version("nexus-operator")
    executable = Path(sys.executable).parent / command
    result = subprocess.run(
        [str(executable), "--version"], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout.strip()) == (0, f"{prog} {__version__}")
