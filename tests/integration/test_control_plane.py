"""The local control plane is a real Kubernetes API server, not a stand-in.

Each test exercises behaviour only a real kube-apiserver + etcd has: structural
schemas and CEL on a CRD, the status subresource, watches replayed from a
resourceVersion, optimistic concurrency, RBAC for a ServiceAccount token minted
by the TokenRequest API, and data surviving an API server restart. The CRD is a
throwaway of its own group so these tests never depend on the product's CRDs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from nexus_testkit.localcluster import Cluster, LocalControlPlane

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "test.nexus.dev", "v1", "widgets"
CEL_MESSAGE = "minReplicas must not exceed maxReplicas"

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {
            "plural": PLURAL,
            "singular": "widget",
            "kind": "Widget",
            "listKind": "WidgetList",
        },
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["minReplicas", "maxReplicas"],
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.minReplicas <= self.maxReplicas",
                                        "message": CEL_MESSAGE,
                                    }
                                ],
                                "properties": {
                                    "minReplicas": {"type": "integer", "minimum": 0},
                                    "maxReplicas": {"type": "integer", "minimum": 0},
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "phase": {"type": "string"},
                                    "observedGeneration": {"type": "integer"},
                                },
                            },
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def widgets(cluster: Cluster) -> Iterator[client.CustomObjectsApi]:
    """The Widget CRD, installed and Established, and a client for its objects."""
    with cluster.api_client() as api:
        extensions = client.ApiextensionsV1Api(api)
        extensions.create_custom_resource_definition(WIDGET_CRD)
        _wait_established(extensions, WIDGET_CRD["metadata"]["name"])
        yield client.CustomObjectsApi(api)
        extensions.delete_custom_resource_definition(WIDGET_CRD["metadata"]["name"])


def _wait_established(extensions: client.ApiextensionsV1Api, name: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        crd = extensions.read_custom_resource_definition(name)
        conditions = crd.status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(0.2)
    pytest.fail(f"CRD {name} never became Established")


def widget(name: str, *, min_replicas: int, max_replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"minReplicas": min_replicas, "maxReplicas": max_replicas},
    }


def create_widget(
    api: client.CustomObjectsApi, namespace: str, body: dict[str, Any]
) -> dict[str, Any]:
    created: dict[str, Any] = api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body
    )
    return created


def test_valid_widget_is_stored_and_read_back(
    widgets: client.CustomObjectsApi, namespace: str
) -> None:
    create_widget(widgets, namespace, widget("alpha", min_replicas=1, max_replicas=3))

    stored = widgets.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "alpha")

    assert stored["spec"] == {"minReplicas": 1, "maxReplicas": 3}
    assert stored["metadata"]["generation"] == 1
    assert stored["metadata"]["resourceVersion"]


def test_cel_rule_rejects_widget_with_the_rules_message(
    widgets: client.CustomObjectsApi, namespace: str
) -> None:
    with pytest.raises(ApiException) as rejected:
        create_widget(widgets, namespace, widget("inverted", min_replicas=5, max_replicas=2))

    assert rejected.value.status == 422
    assert CEL_MESSAGE in rejected.value.body
    assert "spec" in rejected.value.body
    with pytest.raises(ApiException) as missing:
        widgets.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "inverted")
    assert missing.value.status == 404


def test_openapi_schema_rejects_negative_replicas(
    widgets: client.CustomObjectsApi, namespace: str
) -> None:
    with pytest.raises(ApiException) as rejected:
        create_widget(widgets, namespace, widget("negative", min_replicas=-1, max_replicas=2))

    assert rejected.value.status == 422
    assert "spec.minReplicas" in rejected.value.body


def test_watch_replays_added_modified_deleted_from_a_resource_version(
    widgets: client.CustomObjectsApi, namespace: str
) -> None:
    listed = widgets.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    start_version = listed["metadata"]["resourceVersion"]
    create_widget(widgets, namespace, widget("watched", min_replicas=1, max_replicas=2))
    patch = {"spec": {"maxReplicas": 4}}
    widgets.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "watched", patch)
    widgets.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "watched")

    seen = _watch_until_deleted(widgets, namespace, resource_version=start_version)

    assert [kind for kind, _ in seen] == ["ADDED", "MODIFIED", "DELETED"]
    assert [spec["maxReplicas"] for _, spec in seen] == [2, 4, 4]


def _watch_until_deleted(
    api: client.CustomObjectsApi, namespace: str, *, resource_version: str
) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    stream = watch.Watch().stream(
        api.list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        resource_version=resource_version,
        timeout_seconds=30,
    )
    for event in stream:
        seen.append((event["type"], event["object"]["spec"]))
        if event["type"] == "DELETED":
            break
    return seen


def test_status_subresource_separates_spec_and_status_writes(
    widgets: client.CustomObjectsApi, namespace: str
) -> None:
    create_widget(widgets, namespace, widget("split", min_replicas=1, max_replicas=2))

    widgets.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "split", {"status": {"phase": "Ignored"}}
    )
    after_main = widgets.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "split")
    widgets.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "split",
        {"status": {"phase": "Ready"}, "spec": {"maxReplicas": 9}},
    )
    after_status = widgets.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "split")

    assert "status" not in after_main
    assert after_status["status"] == {"phase": "Ready"}
    assert after_status["spec"]["maxReplicas"] == 2
    assert after_status["metadata"]["generation"] == 1


def test_status_patch_with_stale_resource_version_conflicts(
    widgets: client.CustomObjectsApi, namespace: str
) -> None:
    created = create_widget(widgets, namespace, widget("contended", min_replicas=1, max_replicas=2))
    stale = created["metadata"]["resourceVersion"]
    widgets.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "contended", {"status": {"phase": "First"}}
    )

    with pytest.raises(ApiException) as conflict:
        widgets.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "contended",
            {"metadata": {"resourceVersion": stale}, "status": {"phase": "Second"}},
        )

    assert conflict.value.status == 409
    current = widgets.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "contended")
    assert current["status"]["phase"] == "First"


def test_service_account_token_gets_only_what_its_role_grants(
    cluster: Cluster, widgets: client.CustomObjectsApi, namespace: str
) -> None:
    create_widget(widgets, namespace, widget("visible", min_replicas=1, max_replicas=2))
    token = _reader_token(cluster, namespace)
    kubeconfig = cluster.token_kubeconfig(token, name=f"{namespace}-reader", namespace=namespace)

    with cluster.api_client(kubeconfig) as reader_api:
        reader = client.CustomObjectsApi(reader_api)
        listed = reader.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        denied = [
            _status_of(
                lambda: create_widget(
                    reader, namespace, widget("x", min_replicas=0, max_replicas=1)
                )
            ),
            _status_of(
                lambda: reader.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
            ),
            _status_of(lambda: client.CoreV1Api(reader_api).list_namespaced_config_map(namespace)),
        ]
        review = client.AuthenticationV1Api(reader_api).create_self_subject_review(
            client.V1SelfSubjectReview()
        )

    assert [item["metadata"]["name"] for item in listed["items"]] == ["visible"]
    assert denied == [403, 403, 403]
    assert review.status.user_info.username == f"system:serviceaccount:{namespace}:widget-reader"


def _reader_token(cluster: Cluster, namespace: str) -> str:
    """A ServiceAccount bound to a Role that may only read widgets; a TokenRequest token for it."""
    sa_name = "widget-reader"
    with cluster.api_client() as api:
        core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
        core.create_namespaced_service_account(namespace, {"metadata": {"name": sa_name}})
        rule = {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch"]}
        rbac.create_namespaced_role(namespace, {"metadata": {"name": sa_name}, "rules": [rule]})
        binding = {
            "metadata": {"name": sa_name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa_name},
            "subjects": [{"kind": "ServiceAccount", "name": sa_name, "namespace": namespace}],
        }
        rbac.create_namespaced_role_binding(namespace, binding)
        request = {"spec": {"audiences": [], "expirationSeconds": 600}}
        minted = core.create_namespaced_service_account_token(sa_name, namespace, request)
    token: str = minted.status.token
    return token


def _status_of(call: Any) -> int:
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


def test_objects_survive_an_api_server_restart(
    local_control_plane: LocalControlPlane, widgets: client.CustomObjectsApi, namespace: str
) -> None:
    create_widget(widgets, namespace, widget("durable", min_replicas=1, max_replicas=2))

    local_control_plane.stop_apiserver()
    try:
        with pytest.raises(urllib3.exceptions.MaxRetryError):
            widgets.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "durable", _request_timeout=2
            )
    finally:
        local_control_plane.start_apiserver()
    stored = widgets.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "durable")

    assert stored["spec"] == {"minReplicas": 1, "maxReplicas": 2}
