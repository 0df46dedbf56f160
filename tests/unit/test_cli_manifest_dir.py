"""serve --from-dir reads Backends and RoutingPolicies from YAML and reloads on change."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from nexus_operator.cli import cmd_serve, manifest_dir
from nexus_operator.cli.manifest_dir import (
    DirectoryWatcher,
    ManifestError,
    Manifests,
    load_directory,
)
from nexus_operator.routing import Registry

BACKEND = {
    "apiVersion": "nexus.routing.dev/v1alpha1",
    "kind": "Backend",
    "metadata": {"name": "local", "namespace": "team-a"},
    "spec": {"type": "ollama", "url": "http://localhost:11434", "models": [{"id": "llama3:8b"}]},
}
POLICY = {
    "apiVersion": "nexus.routing.dev/v1alpha1",
    "kind": "RoutingPolicy",
    "metadata": {"name": "p"},
    "spec": {"modelPatterns": ["llama3:*"]},
}
SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "key"},
    "stringData": {"k": "v"},
}


def test_multi_document_files_yield_backends_and_policies_and_skip_other_kinds(
    tmp_path: Path,
) -> None:
    (tmp_path / "all.yaml").write_text(yaml.safe_dump_all([BACKEND, SECRET, POLICY]))
    found = load_directory(tmp_path)
    assert [b.metadata.name for b in found.backends] == ["local"]
    assert [(p.metadata.namespace, p.metadata.name) for p in found.policies] == [("default", "p")]


def test_namespace_filter_keeps_only_the_given_namespaces(tmp_path: Path) -> None:
    (tmp_path / "all.yml").write_text(yaml.safe_dump_all([BACKEND, POLICY]))
    found = load_directory(tmp_path, namespaces=["team-a"])
    assert ([b.metadata.name for b in found.backends], found.policies) == (["local"], [])


def test_an_invalid_object_is_reported_with_its_file_and_name(tmp_path: Path) -> None:
    broken = yaml.safe_load(yaml.safe_dump(BACKEND))
    broken["spec"]["tier"] = 9
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(ManifestError, match=r"broken\.yaml: Backend 'local' is invalid"):
        load_directory(tmp_path)


def test_watcher_delivers_a_reload_only_when_files_change(tmp_path: Path) -> None:
    delivered: list[Manifests] = []
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(BACKEND))
    watcher = DirectoryWatcher(tmp_path, on_change=delivered.append)
    watcher.load()
    assert not watcher.poll()
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(POLICY))
    assert watcher.poll()
    assert [len(delivered[0].backends), len(delivered[0].policies)] == [1, 1]


def test_watcher_keeps_the_previous_manifests_when_a_file_breaks(tmp_path: Path) -> None:
    delivered: list[Manifests] = []
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(BACKEND))
    watcher = DirectoryWatcher(tmp_path, on_change=delivered.append)
    watcher.load()
    (tmp_path / "a.yaml").write_text("kind: [unclosed")
    assert not watcher.poll()
    assert delivered == []
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(_renamed(BACKEND, "fixed")))
    assert watcher.poll()
    assert [[b.metadata.name for b in d.backends] for d in delivered] == [["fixed"]]


def _renamed(document: dict[str, Any], name: str) -> dict[str, Any]:
    return {**document, "metadata": {**document["metadata"], "name": name}}


def _watched_registry(directory: Path) -> tuple[DirectoryWatcher, Registry]:
    registry = Registry()
    watcher = DirectoryWatcher(
        directory, on_change=lambda m: registry.replace_all(m.backends, m.policies)
    )
    initial = watcher.load()
    registry.replace_all(initial.backends, initial.policies)
    return watcher, registry


def _backend_names(registry: Registry) -> list[str]:
    return sorted(name for _, name in registry.snapshot.backends)


def test_a_file_that_is_not_utf8_is_reported_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ManifestError, match=r"latin1\.yaml: not UTF-8"):
        load_directory(tmp_path)


def test_a_file_removed_after_listing_is_reported_with_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manifest_dir, "manifest_files", lambda _: [tmp_path / "gone.yaml"])
    with pytest.raises(ManifestError, match=r"gone\.yaml: cannot be read"):
        load_directory(tmp_path)


def test_watcher_keeps_the_registry_through_an_unreadable_file_then_takes_the_fix(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(BACKEND))
    watcher, registry = _watched_registry(tmp_path)
    (tmp_path / "b.yaml").write_bytes(b"\xff\xfe not utf-8")
    assert not watcher.poll()
    assert _backend_names(registry) == ["local"]
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(_renamed(BACKEND, "second")))
    assert watcher.poll()
    assert _backend_names(registry) == ["local", "second"]


async def test_watcher_keeps_polling_after_a_reload_raises(tmp_path: Path) -> None:
    calls: list[Manifests] = []
    first, second = asyncio.Event(), asyncio.Event()

    def on_change(found: Manifests) -> None:
        calls.append(found)
        if len(calls) == 1:
            first.set()
            raise RuntimeError("consumer failed")
        second.set()

    watcher = DirectoryWatcher(tmp_path, on_change=on_change, period_s=0.01)
    watcher.load()
    task = asyncio.create_task(watcher.run())
    try:
        (tmp_path / "a.yaml").write_text(yaml.safe_dump(BACKEND))
        await asyncio.wait_for(first.wait(), timeout=10)
        (tmp_path / "b.yaml").write_text(yaml.safe_dump(POLICY))
        await asyncio.wait_for(second.wait(), timeout=10)
    finally:
        task.cancel()
    assert [len(c.policies) for c in calls] == [0, 1]


CLOUD = {
    "apiVersion": "nexus.routing.dev/v1alpha1",
    "kind": "Backend",
    "metadata": {"name": "cloud"},
    "spec": {
        "type": "openai",
        "url": "https://api.openai.test",
        "models": [{"id": "gpt-4o"}],
        "credentialsSecretRef": {"name": "key", "key": "k"},
    },
}


def test_secrets_in_the_directory_are_kept_by_namespace_and_never_printed(tmp_path: Path) -> None:
    encoded = {**SECRET, "metadata": {"name": "b64", "namespace": "team-a"}}
    encoded.pop("stringData")
    encoded["data"] = {"k": "c2stU0VOVElORUw="}  # sk-SENTINEL
    (tmp_path / "all.yaml").write_text(yaml.safe_dump_all([SECRET, encoded]))
    found = load_directory(tmp_path)
    assert found.secrets == {
        ("default", "key"): {"k": b"v"},
        ("team-a", "b64"): {"k": b"sk-SENTINEL"},
    }
    assert "SENTINEL" not in repr(found)
    assert load_directory(tmp_path, namespaces=["team-a"]).secrets.keys() == {("team-a", "b64")}


def test_a_malformed_secret_is_reported_by_name_without_its_values(tmp_path: Path) -> None:
    broken = {**SECRET, "stringData": ["sk-SENTINEL"]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(ManifestError, match="Secret default/key: stringData") as caught:
        load_directory(tmp_path)
    assert "SENTINEL" not in str(caught.value)


def test_directory_secrets_feed_the_credential_store_and_their_absence_excludes(
    tmp_path: Path,
) -> None:

    registry = Registry()
    (tmp_path / "cloud.yaml").write_text(yaml.safe_dump(CLOUD))
    cmd_serve._apply(registry, load_directory(tmp_path), assume_healthy=True)
    assert registry.credentials.header(("default", "cloud")) is None
    assert registry.runtime.backend("default", "cloud").credentials_problem == (
        "Secret default/key not found"
    )
    (tmp_path / "secret.yaml").write_text(yaml.safe_dump(SECRET))
    cmd_serve._apply(registry, load_directory(tmp_path), assume_healthy=True)
    credential = registry.credentials.header(("default", "cloud"))
    assert credential is not None
    assert (credential.header_name, credential.header_value) == ("authorization", "Bearer v")
    assert registry.runtime.backend("default", "cloud").credentials_problem is None
    (tmp_path / "cloud.yaml").unlink()
    cmd_serve._apply(registry, load_directory(tmp_path), assume_healthy=True)
    assert registry.credentials.keys() == frozenset()


def test_a_url_refused_for_its_user_info_is_reported_without_the_password(tmp_path: Path) -> None:
    broken = yaml.safe_load(yaml.safe_dump(BACKEND))
    broken["spec"]["url"] = "http://admin:hunter2@localhost:11434"
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(ManifestError, match=r"spec\.url: .*must not contain user-info") as caught:
        load_directory(tmp_path)
    assert "hunter2" not in str(caught.value)
    assert caught.value.__cause__ is None
