"""Backend and RoutingPolicy objects from a directory of YAML files (`serve --from-dir`).

Files are read as multi-document YAML; core/v1 Secrets are kept (by namespace and name, values
decoded from `data` or taken from `stringData`) for the Backends' credentialsSecretRef, and
documents of other kinds (Namespaces, …) are skipped, so the same directory can be applied to a
cluster with `kubectl apply -f`. Secret values are never printed: not in reprs, logs or errors.
A directory is reloaded as a whole: a file that fails to parse keeps the previous content.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..api import GROUP, Backend, RoutingPolicy
from ..routing.credentials import secret_data

logger = logging.getLogger(__name__)

SUFFIXES = (".yaml", ".yml")
_KINDS: dict[str, type[Backend] | type[RoutingPolicy]] = {
    "Backend": Backend,
    "RoutingPolicy": RoutingPolicy,
}


class ManifestError(ValueError):
    """A document in the directory is not a valid Backend or RoutingPolicy."""


@dataclass
class Manifests:
    """The objects found in one directory, by kind."""

    backends: list[Backend] = field(default_factory=list)
    policies: list[RoutingPolicy] = field(default_factory=list)
    # (namespace, name) → key → value; repr=False: values are never printed.
    secrets: dict[tuple[str, str], dict[str, bytes]] = field(default_factory=dict, repr=False)


def load_directory(directory: Path, *, namespaces: Iterable[str] = ()) -> Manifests:
    """Every Backend and RoutingPolicy under `directory` (recursively), optionally by namespace."""
    wanted = frozenset(namespaces)
    found = Manifests()
    for path in manifest_files(directory):
        for document in _documents(path):
            secret = _secret(document, path=path)
            if secret is not None:
                if not wanted or secret[0][0] in wanted:
                    found.secrets[secret[0]] = secret[1]
                continue
            obj = _parse(document, path=path)
            if obj is None or (wanted and obj.metadata.namespace not in wanted):
                continue
            if isinstance(obj, Backend):
                found.backends.append(obj)
            else:
                found.policies.append(obj)
    return found


def manifest_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix in SUFFIXES and p.is_file())


def _documents(path: Path) -> list[Any]:
    """A file may be half-written, not text, or gone since the directory was listed."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise ManifestError(f"{path}: cannot be read: {exc}") from exc
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from exc


def _secret(document: Any, *, path: Path) -> tuple[tuple[str, str], dict[str, bytes]] | None:
    """A core/v1 Secret's key and data; errors name the Secret, never a value."""
    if not isinstance(document, dict) or document.get("kind") != "Secret":
        return None
    if document.get("apiVersion") != "v1":
        return None
    meta = document.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{path}: a Secret has no metadata.name")
    namespace = str(meta.get("namespace") or "default")
    for section in ("data", "stringData"):
        if not isinstance(document.get(section) or {}, dict):
            raise ManifestError(f"{path}: Secret {namespace}/{name}: {section} is not a mapping")
    return (namespace, name), secret_data(document)


def _parse(document: Any, *, path: Path) -> Backend | RoutingPolicy | None:
    if not isinstance(document, dict):
        return None
    model = _KINDS.get(str(document.get("kind")))
    if model is None or not str(document.get("apiVersion", "")).startswith(f"{GROUP}/"):
        return None
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        name = (document.get("metadata") or {}).get("name", "?")
        raise ManifestError(
            f"{path}: {document['kind']} {name!r} is invalid: {_describe(exc)}"
        ) from None


def _describe(error: ValidationError) -> str:
    """Each error at its field path, without the rejected input: a URL refused for its
    user-info must not be printed with the password in it."""
    return "; ".join(
        ".".join(str(part) for part in item["loc"]) + ": " + item["msg"]
        for item in error.errors(include_url=False, include_input=False)
    )


class DirectoryWatcher:
    """Polls a directory's YAML files (paths, mtimes, sizes) and reloads when they change.

    Polling keeps it dependency-free and works on every filesystem; a one-second period is
    well within what someone editing files by hand notices.
    """

    def __init__(
        self,
        directory: Path,
        *,
        on_change: Callable[[Manifests], None],
        namespaces: Iterable[str] = (),
        period_s: float = 1.0,
    ) -> None:
        self._directory = directory
        self._on_change = on_change
        self._namespaces = tuple(namespaces)
        self._period_s = period_s
        self._seen = self._signature()

    def load(self) -> Manifests:
        """Read the directory now (raises ManifestError) and remember its state."""
        self._seen = self._signature()
        return load_directory(self._directory, namespaces=self._namespaces)

    async def run(self) -> None:
        """Poll until cancelled; a failed reload is logged and never ends the watch."""
        while True:
            await asyncio.sleep(self._period_s)
            try:
                self.poll()
            except Exception:
                logger.exception(
                    "Reloading %s failed; kept the previous manifests", self._directory
                )

    def poll(self) -> bool:
        """Reload when the files changed; True when new manifests were delivered."""
        signature = self._signature()
        if signature == self._seen:
            return False
        self._seen = signature
        try:
            manifests = load_directory(self._directory, namespaces=self._namespaces)
        except ManifestError as exc:
            logger.error("Kept the previous manifests: %s", exc)
            return False
        logger.info(
            "Reloaded %s: %d backends, %d policies",
            self._directory,
            len(manifests.backends),
            len(manifests.policies),
        )
        self._on_change(manifests)
        return True

    def _signature(self) -> tuple[tuple[str, int, int], ...]:
        entries = []
        for path in manifest_files(self._directory):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entries.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(entries)
