"""`nexusctl`: ask the routing endpoint for decisions, explain them, report usage, list inventory.

Exit codes (one per outcome or gRPC status, so scripts can branch on them):
  0 routed / OK                      3 rejected            4 queued
  2 bad arguments (INVALID_ARGUMENT)  5 endpoint unavailable (UNAVAILABLE)
  6 deadline exceeded                7 refused (UNAUTHENTICATED, PERMISSION_DENIED)
  8 overloaded (RESOURCE_EXHAUSTED)  9 not found (NOT_FOUND)    1 any other error
`get` asks the endpoint itself (GetInventory), so it shows the runtime view of whichever process
answers — health, in-flight and budget as that replica sees them — with or without a cluster.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
import yaml
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from .. import __version__
from ..serving.proto import router_pb2 as pb
from ..serving.proto import router_pb2_grpc
from .ctl_views import decision_view, explanation_view, inventory_view

DEFAULT_ADDRESS = "localhost:50051"
EXIT_REJECTED = 3
EXIT_QUEUED = 4
_EXIT_BY_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 2,
    grpc.StatusCode.UNAVAILABLE: 5,
    grpc.StatusCode.DEADLINE_EXCEEDED: 6,
    grpc.StatusCode.UNAUTHENTICATED: 7,
    grpc.StatusCode.PERMISSION_DENIED: 7,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 8,
    grpc.StatusCode.NOT_FOUND: 9,
}
_EXIT_BY_OUTCOME = {pb.OUTCOME_REJECTED: EXIT_REJECTED, pb.OUTCOME_QUEUED: EXIT_QUEUED}
_PRIVACY = {"restricted": pb.PRIVACY_RESTRICTED, "unrestricted": pb.PRIVACY_UNRESTRICTED}


def build_parser() -> argparse.ArgumentParser:
    """Connection flags work before or after the subcommand, as kubectl users expect.

    The subcommands share a parent parser whose flags default to SUPPRESS, so a flag given after
    the subcommand overrides the top-level value and an absent one leaves it alone.
    """
    parser = argparse.ArgumentParser(
        prog="nexusctl", description="Talk to the nexus-operator gRPC routing endpoint."
    )
    parser.add_argument("--version", action="version", version=f"nexusctl {__version__}")
    _add_connection_arguments(parser, defaults=True)
    connection = argparse.ArgumentParser(add_help=False)
    _add_connection_arguments(connection, defaults=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in (
        ("route", "Ask for a routing decision."),
        ("explain", "Show how a decision is made, with no side effects."),
    ):
        command = sub.add_parser(name, help=help_text, description=help_text, parents=[connection])
        _add_request_arguments(command)
    usage = sub.add_parser(
        "usage",
        help="Report what a routed request cost.",
        description="Report what a routed request cost.",
        parents=[connection],
    )
    _add_usage_arguments(usage)
    get = sub.add_parser(
        "get",
        help="List backends and policies with health and exclusions.",
        parents=[connection],
    )
    get.add_argument("kind", nargs="?", choices=["all", "backends", "policies"], default="all")
    get.add_argument("-n", "--namespace", default="", help="Only this namespace (default all).")
    return parser


def _add_connection_arguments(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The connection flags; with defaults=False every default is SUPPRESS (see build_parser)."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--address",
        default=default(os.environ.get("NEXUS_ADDRESS", DEFAULT_ADDRESS)),
        help=f"host:port of the endpoint (env NEXUS_ADDRESS, default {DEFAULT_ADDRESS}).",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=["table", "json", "yaml"],
        default=default("table"),
        help="Output format.",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=default(5.0),
        help="Deadline per call in seconds, > 0 (default 5).",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        default=default(False),
        help="Use TLS (implied by the other TLS flags).",
    )
    parser.add_argument(
        "--ca-file",
        type=Path,
        default=default(None),
        help="PEM CA that signs the server certificate (default: system roots).",
    )
    parser.add_argument(
        "--cert-file",
        type=Path,
        default=default(None),
        help="PEM client certificate for mutual TLS (needs --key-file).",
    )
    parser.add_argument(
        "--key-file",
        type=Path,
        default=default(None),
        help="PEM private key of --cert-file (needs --cert-file).",
    )
    parser.add_argument(
        "--server-name",
        default=default(None),
        help="Expected server name in its certificate (TLS).",
    )


def positive_seconds(text: str) -> float:
    """A deadline: zero, negative or non-finite values would fail every call with DEADLINE_EXCEEDED."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number of seconds, not {text}")
    return seconds


def _add_request_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="Model or alias to route.")
    parser.add_argument(
        "-n",
        "--namespace",
        default="",
        help="Namespace of the Backends and policies (default 'default').",
    )
    parser.add_argument("--tokens", type=int, default=0, help="Estimated input tokens.")
    parser.add_argument("--prompt", help="A user message; tokens are estimated from it.")
    parser.add_argument(
        "--messages-file", type=Path, help="JSON file with OpenAI-style chat messages."
    )
    parser.add_argument("--vision", action="store_true", help="The request carries images.")
    parser.add_argument("--tools", action="store_true", help="The request uses tool calling.")
    parser.add_argument("--json-mode", action="store_true", help="The request asks for JSON mode.")
    parser.add_argument(
        "--max-output-tokens", type=int, help="Largest number of output tokens wanted."
    )
    parser.add_argument("--privacy", choices=sorted(_PRIVACY), help="Tighten the policy's privacy.")
    parser.add_argument("--min-tier", type=int, help="Minimum backend tier (1-5).")
    parser.add_argument("--strict", action="store_true", help="No fallbacks.")
    parser.add_argument("--request-id", default="", help="Correlation id.")


def _add_usage_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", required=True, help="Backend that served the request.")
    parser.add_argument("--model", required=True, help="Model that served it.")
    parser.add_argument(
        "-n", "--namespace", default="", help="Namespace of the backend (default 'default')."
    )
    parser.add_argument("--policy", default="", help="RoutingPolicy the spend counts against.")
    parser.add_argument("--input-tokens", type=int, default=0, help="Input tokens used.")
    parser.add_argument("--output-tokens", type=int, default=0, help="Output tokens produced.")
    parser.add_argument(
        "--cost", type=float, help="Actual cost in USD (default: from the backend's pricing)."
    )
    parser.add_argument("--failed", action="store_true", help="The request failed.")
    parser.add_argument("--latency-ms", type=float, help="End-to-end latency in ms.")
    parser.add_argument("--ttft-ms", type=float, help="Time to first token in ms.")
    parser.add_argument("--request-id", default="", help="request_id from the Route response.")


def route_request(args: argparse.Namespace) -> pb.RouteRequest:
    """The RouteRequest the route/explain flags describe."""
    request = pb.RouteRequest(
        model=args.model,
        namespace=args.namespace,
        estimated_tokens=args.tokens,
        needs_vision=args.vision,
        needs_tools=args.tools,
        needs_json_mode=args.json_mode,
        strict=args.strict,
        request_id=args.request_id,
        privacy=_PRIVACY.get(args.privacy or "", pb.PRIVACY_UNSPECIFIED),
    )
    if args.prompt is not None:
        request.messages.add(role="user", text=args.prompt)
    if args.messages_file is not None:
        request.messages.extend(chat_messages(read_messages_file(args.messages_file)))
    if args.max_output_tokens is not None:
        request.max_output_tokens = args.max_output_tokens
    if args.min_tier is not None:
        request.min_tier = args.min_tier
    return request


class MessagesFileError(ValueError):
    """A --messages-file that is not a list of OpenAI chat messages; names the JSON path at fault."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"messages-file: {path}: {problem}")


def read_messages_file(path: Path) -> list[pb.ChatMessage]:
    """The file's chat messages, or MessagesFileError instead of a traceback for any other shape."""
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MessagesFileError("messages", f"not valid JSON: {exc}") from None
    return chat_messages(document)


def chat_messages(messages: object) -> list[pb.ChatMessage]:
    """OpenAI chat messages (content a string, a list of parts or null) as proto messages."""
    if not isinstance(messages, list):
        raise MessagesFileError(
            "messages", f"must be a list of chat messages, not {_kind(messages)}"
        )
    return [_chat_message(message, path=f"messages[{i}]") for i, message in enumerate(messages)]


def _chat_message(message: object, *, path: str) -> pb.ChatMessage:
    if not isinstance(message, dict):
        raise MessagesFileError(path, f"must be an object, not {_kind(message)}")
    role = _optional_string(message, "role", path=path)
    content = message.get("content")
    if content is None or isinstance(content, str):
        return pb.ChatMessage(role=role, text=content or "")
    if not isinstance(content, list):
        raise MessagesFileError(
            f"{path}.content", f"must be a string or a list of parts, not {_kind(content)}"
        )
    parts = [_content_part(part, path=f"{path}.content[{i}]") for i, part in enumerate(content)]
    return pb.ChatMessage(role=role, parts=pb.ContentParts(parts=parts))


def _content_part(part: object, *, path: str) -> pb.ContentPart:
    if not isinstance(part, dict):
        raise MessagesFileError(path, f"must be an object, not {_kind(part)}")
    image_url = part.get("image_url")
    if image_url is None:
        url = ""
    elif isinstance(image_url, dict):
        url = _optional_string(image_url, "url", path=f"{path}.image_url")
    else:
        raise MessagesFileError(
            f"{path}.image_url", f'must be an object like {{"url": "..."}}, not {_kind(image_url)}'
        )
    return pb.ContentPart(
        type=_optional_string(part, "type", path=path),
        text=_optional_string(part, "text", path=path),
        image_url=pb.ImageUrl(url=url),
    )


def _optional_string(obj: dict[str, object], key: str, *, path: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MessagesFileError(f"{path}.{key}", f"must be a string, not {_kind(value)}")
    return value


def _kind(value: object) -> str:
    """The JSON name of a decoded value's type, as a user who wrote the file would call it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def usage_report(args: argparse.Namespace) -> pb.UsageReport:
    report = pb.UsageReport(
        backend=args.backend,
        namespace=args.namespace,
        model=args.model,
        policy=args.policy,
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
        success=not args.failed,
        request_id=args.request_id,
    )
    for field, value in (
        ("cost_usd", args.cost),
        ("latency_ms", args.latency_ms),
        ("ttft_ms", args.ttft_ms),
    ):
        if value is not None:
            setattr(report, field, value)
    return report


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    """An insecure channel, or a TLS one when any TLS flag is given."""
    if not (args.tls or args.ca_file or args.cert_file or args.key_file):
        return grpc.insecure_channel(args.address)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=args.ca_file.read_bytes() if args.ca_file else None,
        private_key=args.key_file.read_bytes() if args.key_file else None,
        certificate_chain=args.cert_file.read_bytes() if args.cert_file else None,
    )
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(args.address, credentials, options=options)


def _call(
    args: argparse.Namespace, stub: router_pb2_grpc.RouterStub
) -> tuple[Message, Callable[[], str], int]:
    """(response, its table view, exit code) for the chosen command."""
    if args.command in ("route", "explain"):
        request = route_request(args)
        if args.command == "route":
            response = stub.Route(request, timeout=args.timeout)
            return (
                response,
                lambda: decision_view(response),
                _EXIT_BY_OUTCOME.get(response.outcome, 0),
            )
        explained = stub.Explain(request, timeout=args.timeout)
        return (
            explained,
            lambda: explanation_view(explained),
            _EXIT_BY_OUTCOME.get(explained.decision.outcome, 0),
        )
    if args.command == "usage":
        ack = stub.ReportUsage(usage_report(args), timeout=args.timeout)
        return ack, lambda: "usage recorded", 0
    inventory = stub.GetInventory(
        pb.InventoryRequest(namespace=args.namespace), timeout=args.timeout
    )
    kinds = ("backends", "policies") if args.kind == "all" else (args.kind,)
    return inventory, lambda: inventory_view(inventory, kinds=kinds), 0


def render(
    message: Message,
    table: Callable[[], str],
    *,
    output: str,
    fields: Sequence[str] | None = None,
) -> str:
    """The table view, or the message as json/yaml limited to `fields` (all when None)."""
    if output == "table":
        return table()
    data = MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )
    if fields is not None:
        data = {key: value for key, value in data.items() if key in fields}
    if output == "json":
        return json.dumps(data, indent=2)
    return yaml.safe_dump(data, sort_keys=False).rstrip()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parsed flags; a lone --cert-file or --key-file is a usage error, since gRPC aborts on it."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.cert_file is None) != (args.key_file is None):
        parser.error("--cert-file and --key-file must be given together")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with open_channel(args) as channel:
            response, table, code = _call(args, router_pb2_grpc.RouterStub(channel))
    except grpc.RpcError as exc:
        status = exc.code()
        print(f"nexusctl: {status.name}: {exc.details()}", file=sys.stderr)
        return _EXIT_BY_STATUS.get(status, 1)
    except (OSError, ValueError) as exc:
        print(f"nexusctl: {exc}", file=sys.stderr)
        return 2
    fields = None if args.command != "get" or args.kind == "all" else [args.kind]
    print(render(response, table, output=args.output, fields=fields))
    return code


if __name__ == "__main__":
    sys.exit(main())
