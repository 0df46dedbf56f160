"""serve --from-dir reads Backends and RoutingPolicies from YAML and reloads on change."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nexus_operator.cli.manifests import DirectoryWatcher, ManifestError, Manifests, load_directory

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
