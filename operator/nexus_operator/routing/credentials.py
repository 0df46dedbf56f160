"""Credentials: the upstream header each cloud Backend's `credentialsSecretRef` yields.

The operator (or `serve --from-dir`) reads the named Secret and records here either the header
to inject or why there is none (Secret missing, key missing, empty value). The gateway reads it
when it forwards a request; the pipeline reads `problem()` to exclude a Backend whose credential
is unusable. Values never leave this object except through `header()`: its repr, and every
message it produces, name the Secret and key, never the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

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

    Writers replace one entry at a time; readers see a consistent mapping with one read."""

    def __init__(self) -> None:
        self._ok: MappingProxyType[Key, Credential] = MappingProxyType({})
        self._problems: MappingProxyType[Key, str] = MappingProxyType({})

    def set(self, key: Key, credential: Credential) -> None:
        self._ok = MappingProxyType({**self._ok, key: credential})
        self._drop_problem(key)

    def set_problem(self, key: Key, problem: str) -> None:
        self._problems = MappingProxyType({**self._problems, key: problem})
        self._drop_ok(key)

    def forget(self, key: Key) -> None:
        self._drop_ok(key)
        self._drop_problem(key)

    def header(self, key: Key) -> Credential | None:
        return self._ok.get(key)

    def problem(self, key: Key) -> str | None:
        return self._problems.get(key)

    def __repr__(self) -> str:
        return f"CredentialStore({len(self._ok)} credentials, {len(self._problems)} problems)"

    def _drop_ok(self, key: Key) -> None:
        if key in self._ok:
            self._ok = MappingProxyType({k: v for k, v in self._ok.items() if k != key})

    def _drop_problem(self, key: Key) -> None:
        if key in self._problems:
            self._problems = MappingProxyType({k: v for k, v in self._problems.items() if k != key})
