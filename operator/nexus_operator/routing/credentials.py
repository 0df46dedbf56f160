"""Credentials: the upstream header each cloud Backend's `credentialsSecretRef` yields.

The operator (or `serve --from-dir`) reads the named Secret and records here either the header
to inject or why there is none (Secret missing, key missing, empty value). The gateway reads it
when it forwards a request (`registry.credentials.header((namespace, name))`); the pipeline
excludes a Backend whose credential is unusable (`credentials_unavailable`) by reading the same
problems through the runtime cells: the store writes them into `RuntimeState.credential_problems`. Values never leave this object except through `header()`: its repr, and every
message it produces, name the Secret and key, never the value.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from nexus_operator.api import Backend, BackendType, SecretKeyRef, conditions
from nexus_operator.pipeline import RuntimeState

Key = tuple[str, str]  # (namespace, backend name)


@dataclass(frozen=True, slots=True)
class Credential:
    """One upstream header, e.g. ("authorization", "Bearer sk-…") or ("x-api-key", "…")."""

    header_name: str
    header_value: str = field(repr=False)
    source: str  # "<secret>/<key>", for messages

    def __repr__(self) -> str:
        return f"Credential(header_name={self.header_name!r}, source={self.source!r})"


class CredentialStore:
    """Copy-on-write map Backend → Credential, or → a problem string (a reason, no value).

    Writers replace one entry at a time; readers see a consistent mapping with one read.
    Problems live in `runtime.credential_problems` (a private dict without a runtime), where
    the HealthReconciler finds them."""

    def __init__(self, runtime: RuntimeState | None = None) -> None:
        self._ok: MappingProxyType[Key, Credential] = MappingProxyType({})
        self._problems: dict[Key, str] = runtime.credential_problems if runtime else {}
        # Told of every write (the serving plane copies credentials to its workers).
        self.on_change: Callable[[Key, Credential | None, str | None], None] | None = None
        self._facts = runtime.facts if runtime else None

    def set(self, key: Key, credential: Credential) -> None:
        self._ok = MappingProxyType({**self._ok, key: credential})
        self._drop_problem(key)
        if self.on_change is not None:
            self.on_change(key, credential, None)

    def set_problem(self, key: Key, problem: str) -> None:
        if self._problems.get(key) != problem and self._facts is not None:
            self._facts.note(key)
        self._problems[key] = problem
        self._drop_ok(key)
        if self.on_change is not None:
            self.on_change(key, None, problem)

    def forget(self, key: Key) -> None:
        self._drop_ok(key)
        self._drop_problem(key)
        if self.on_change is not None:
            self.on_change(key, None, None)

    def header(self, key: Key) -> Credential | None:
        return self._ok.get(key)

    def problem(self, key: Key) -> str | None:
        return self._problems.get(key)

    def __repr__(self) -> str:
        return f"CredentialStore({len(self._ok)} credentials, {len(self._problems)} problems)"

    def _drop_ok(self, key: Key) -> None:
        if key in self._ok:
            self._ok = MappingProxyType({k: v for k, v in self._ok.items() if k != key})

    def keys(self) -> frozenset[Key]:
        """Every backend with an entry, credential or problem."""
        return frozenset(self._ok) | frozenset(self._problems)

    def _drop_problem(self, key: Key) -> None:
        if self._problems.pop(key, None) is not None and self._facts is not None:
            self._facts.note(key)


@dataclass(frozen=True, slots=True)
class CredentialProblem:
    """Why a Backend has no usable credential: a condition reason and a message naming the
    Secret and key (never a value)."""

    reason: str
    message: str


def header_for(backend_type: BackendType, value: str) -> tuple[str, str]:
    """The upstream header a key becomes. Anthropic's native API requires `x-api-key` (its
    OpenAI-compatible endpoint is used with a bearer; docs/api.md says how to get one there).
    Every other type (openai, google's OpenAI-compatible endpoint, vllm --api-key, …) gets a
    bearer."""
    if backend_type is BackendType.ANTHROPIC:
        return ("x-api-key", value)
    return ("authorization", f"Bearer {value}")


def secret_data(secret: Mapping[str, Any]) -> dict[str, bytes]:
    """A Secret's keys and decoded values: `data` (base64) overlaid by `stringData` (manifests
    only; the API server folds it into `data`). A value that is not base64 is dropped."""
    found: dict[str, bytes] = {}
    for key, encoded in (secret.get("data") or {}).items():
        try:
            found[str(key)] = base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError):
            continue
    for key, text in (secret.get("stringData") or {}).items():
        found[str(key)] = str(text).encode()
    return found


def resolve(
    backend_type: BackendType,
    ref: SecretKeyRef,
    *,
    namespace: str,
    data: Mapping[str, bytes] | None,
) -> Credential | CredentialProblem:
    """The credential `ref` names, given the Secret's data (None: no such Secret)."""
    where = f"Secret {namespace}/{ref.name}"
    if data is None:
        return CredentialProblem(conditions.SECRET_NOT_FOUND, f"{where} not found")
    raw = data.get(ref.key)
    if raw is None:
        return CredentialProblem(conditions.KEY_NOT_FOUND, f"{where} has no key {ref.key!r}")
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        value = None
    if value == "":
        return CredentialProblem(conditions.EMPTY_VALUE, f"key {ref.key!r} of {where} is empty")
    if value is None or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return CredentialProblem(
            conditions.INVALID_VALUE,
            f"key {ref.key!r} of {where} is not usable in an HTTP header "
            "(not UTF-8, or holds control characters)",
        )
    name, header = header_for(backend_type, value)
    return Credential(name, header, source=f"{ref.name}/{ref.key}")


def record(store: CredentialStore, key: Key, *, result: Credential | CredentialProblem) -> None:
    if isinstance(result, Credential):
        store.set(key, result)
    else:
        store.set_problem(key, result.message)


def sync_from_secrets(
    store: CredentialStore,
    backends: Iterable[Backend],
    *,
    secrets: Mapping[tuple[str, str], Mapping[str, bytes]],
) -> dict[Key, CredentialProblem]:
    """Fill `store` for every Backend naming a Secret, from Secrets already at hand (`serve
    --from-dir`); forget Backends that name none. Returns the problems found, by backend."""
    problems: dict[Key, CredentialProblem] = {}
    named: set[Key] = set()
    for backend in backends:
        ref = backend.spec.credentials_secret_ref
        if ref is None:
            continue
        key = (backend.metadata.namespace, backend.metadata.name)
        named.add(key)
        data = secrets.get((key[0], ref.name))
        result = resolve(backend.spec.type, ref, namespace=key[0], data=data)
        record(store, key, result=result)
        if isinstance(result, CredentialProblem):
            problems[key] = result
    for key in store.keys() - named:
        store.forget(key)
    return problems
