"""Reads the Secrets Backends name in `credentialsSecretRef` into the registry's CredentialStore.

Namespaced `get` only, never list or watch: the operator cannot enumerate Secrets, and reads
exactly those a Backend names, in the Backend's namespace. A Secret is read when a Backend
starts naming it (or names another key, or changes type), and every Secret named by any Backend
is re-read each `refresh_interval_s` (default 30 s), so a created, fixed, rotated or deleted
Secret takes effect within that interval. A watch would be faster but needs `list` and `watch`
on every Secret of the namespace; polling one GET per named Secret per interval is cheap.

The outcome is either a header in the store or a problem (SecretNotFound, KeyNotFound,
EmptyValue, InvalidValue, SecretUnreadable) that the pipeline turns into the
`credentials_unavailable` exclusion, the status writer into `CredentialsReady=False`, and this
module into one Event per change. A transient API error keeps the last outcome. Nothing here
logs, posts or stores a value: messages name the Secret and key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nexus_operator import api
from nexus_operator.api import conditions
from nexus_operator.routing import Credential, CredentialProblem
from nexus_operator.routing.credentials import record, resolve, secret_data

from .condition_list import DesiredCondition
from .kube import KubeApi, KubeError, NotFoundError

if TYPE_CHECKING:
    from nexus_operator.routing import Registry, RegistryChange, RegistrySnapshot

logger = logging.getLogger(__name__)

BackendKey = tuple[str, str]
Outcome = Credential | CredentialProblem
ChangeHook = Callable[[BackendKey, Outcome], None]
_FORBIDDEN = 403


@dataclass(frozen=True)
class Wanted:
    """What a Backend's credential depends on; a change means read again."""

    type: api.BackendType
    ref: api.SecretKeyRef


class SecretCredentials:
    def __init__(
        self,
        kube: KubeApi,
        registry: Registry,
        *,
        refresh_interval_s: float = 30.0,
        on_change: ChangeHook | None = None,
    ) -> None:
        self._kube = kube
        self._registry = registry
        self._refresh_interval_s = refresh_interval_s
        self._on_change = on_change
        self._wanted: dict[BackendKey, Wanted] = {}
        self._outcomes: dict[BackendKey, Outcome] = {}
        self._dirty: set[BackendKey] = set()
        self._wake = asyncio.Event()

    def condition(self, key: BackendKey) -> DesiredCondition | None:
        """CredentialsReady for a Backend with credentialsSecretRef; None without one, or before
        its Secret was first read."""
        if key not in self._wanted:
            return None
        outcome = self._outcomes.get(key)
        if outcome is None:
            return None
        if isinstance(outcome, Credential):
            return DesiredCondition(
                conditions.CREDENTIALS_READY,
                api.ConditionStatus.TRUE,
                conditions.SECRET_READ,
                f"Credential read from Secret key {outcome.source}.",
            )
        return DesiredCondition(
            conditions.CREDENTIALS_READY, api.ConditionStatus.FALSE, outcome.reason, outcome.message
        )

    async def start(self) -> None:
        """Follow the registry and read every named Secret once before returning."""
        self._registry.add_change_listener(self.on_change)
        self.reconcile(self._registry.snapshot)
        await self.refresh(all_keys=True)

    async def run(self) -> None:
        """Read dirty Backends as they change, and every named Secret each refresh interval
        (however often Backends change in between)."""
        next_full = time.monotonic() + self._refresh_interval_s
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that
            # arrives as the event is set, and stop() would wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_full - time.monotonic())):
                    await self._wake.wait()
            self._wake.clear()
            every = time.monotonic() >= next_full
            if every:
                next_full = time.monotonic() + self._refresh_interval_s
            try:
                await self.refresh(all_keys=every)
            except Exception:
                logger.exception("Reading credential Secrets failed; retrying next round")

    def on_change(self, change: RegistryChange) -> None:
        """Registry change listener: look only at the Backends the change names."""
        snapshot = self._registry.snapshot
        keys = [*change.deleted_backends]
        keys += [(b.metadata.namespace, b.metadata.name) for b in change.backends]
        changed: set[BackendKey] = set()
        for key in keys:
            backend = snapshot.backends.get(key)
            ref = backend.spec.credentials_secret_ref if backend is not None else None
            wanted = Wanted(backend.spec.type, ref) if backend is not None and ref else None
            if wanted is None:
                if self._wanted.pop(key, None) is not None:
                    self._outcomes.pop(key, None)
                    self._registry.credentials.forget(key)
            elif self._wanted.get(key) != wanted:
                self._wanted[key] = wanted
                changed.add(key)
        if changed:
            self._dirty |= changed
            self._wake.set()

    def reconcile(self, snapshot: RegistrySnapshot) -> None:
        """Note Backends whose reference appeared, changed or went away (the whole registry)."""
        wanted: dict[BackendKey, Wanted] = {}
        for key, backend in snapshot.backends.items():
            ref = backend.spec.credentials_secret_ref
            if ref is not None:
                wanted[key] = Wanted(backend.spec.type, ref)
        for key in self._wanted.keys() - wanted.keys():
            self._outcomes.pop(key, None)
            self._registry.credentials.forget(key)
        changed = {k for k, w in wanted.items() if self._wanted.get(k) != w}
        self._wanted = wanted
        if changed:
            self._dirty |= changed
            self._wake.set()

    async def refresh(self, *, all_keys: bool = False) -> None:
        """Read each Secret the chosen Backends name once, then record every outcome."""
        keys = set(self._wanted) if all_keys else self._dirty & set(self._wanted)
        self._dirty -= keys
        secrets: dict[tuple[str, str], SecretRead] = {}
        for key in sorted(keys):
            wanted = self._wanted[key]
            where = (key[0], wanted.ref.name)
            if where not in secrets:
                secrets[where] = await self._read(*where)
            data = secrets[where]
            if data is _TRANSIENT or wanted != self._wanted.get(key):
                continue  # keep the last outcome; or the Backend changed while we read
            if isinstance(data, CredentialProblem):
                self._apply(key, data)
            else:
                assert not isinstance(data, _Transient)
                self._apply(key, resolve(wanted.type, wanted.ref, namespace=key[0], data=data))

    async def _read(self, namespace: str, name: str) -> SecretRead:
        try:
            secret = await self._kube.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        except NotFoundError:
            return None
        except KubeError as exc:
            if exc.status == _FORBIDDEN:
                return CredentialProblem(
                    conditions.SECRET_UNREADABLE,
                    f"Secret {namespace}/{name} cannot be read: the operator may not get Secrets "
                    f"in namespace {namespace!r} (chart value rbac.secrets.enabled)",
                )
            logger.warning(
                "Secret %s/%s not read, keeping its last outcome: %s", namespace, name, exc
            )
            return _TRANSIENT
        return secret_data(secret)

    def _apply(self, key: BackendKey, outcome: Outcome) -> None:
        previous = self._outcomes.get(key)
        self._outcomes[key] = outcome
        if previous != outcome:  # a re-read finding the same value writes nothing (nor to workers)
            record(self._registry.credentials, key, result=outcome)
        if _same(previous, outcome):
            return
        if isinstance(outcome, CredentialProblem):
            logger.warning("Backend %s/%s: credentials unavailable: %s", *key, outcome.message)
        elif previous is not None:
            logger.info("Backend %s/%s: credentials available again", *key)
        first_and_fine = previous is None and isinstance(outcome, Credential)
        if self._on_change is not None and not first_and_fine:
            self._on_change(key, outcome)


class _Transient:
    """The API server did not answer: keep whatever was known."""


_TRANSIENT = _Transient()
SecretRead = dict[str, bytes] | None | CredentialProblem | _Transient


def _same(a: Outcome | None, b: Outcome) -> bool:
    """Equal for status and Events: the same problem, or a credential from the same key (a
    rotated value is not a change anyone is told about)."""
    if isinstance(a, Credential) and isinstance(b, Credential):
        return a.source == b.source and a.header_name == b.header_name
    return a == b
