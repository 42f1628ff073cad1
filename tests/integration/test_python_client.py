"""The official kubernetes Python client against istiod: CoreV1Api, CustomObjectsApi, watch."""

from __future__ import annotations

import threading
import time

import pytest

from tests import harness

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client, config, watch  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(istiod: harness.Istiod) -> client.ApiClient:
    return config.new_client_from_config(str(istiod.kubeconfig))


def _pod(name: str, labels: dict[str, str] | None = None) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {"app": name}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="busybox", command=["sleep", "1d"])]),
    )


def test_namespaces_create_list_patch_delete(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    created = core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="pyclient")))
    assert created.metadata.uid and created.status.phase == "Active"
    names = [n.metadata.name for n in core.list_namespace().items]
    assert {"default", "istio-system", "pyclient"} <= set(names)
    patched = core.patch_namespace("pyclient", {"metadata": {"labels": {"istio.io/dataplane-mode": "ambient"}}})
    assert patched.metadata.labels["istio.io/dataplane-mode"] == "ambient"
    sas = core.list_namespaced_service_account("pyclient").items
    assert [sa.metadata.name for sa in sas] == ["default"]  # every namespace comes with one
    core.delete_namespace("pyclient")
    with pytest.raises(ApiException) as err:
        core.read_namespace("pyclient")
    assert err.value.status == 404


def test_pods_create_list_patch_replace_delete(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    created = core.create_namespaced_pod("default", _pod("py-a"))
    assert created.spec.service_account_name == "default"
    assert created.status.phase == "Pending"
    core.create_namespaced_pod("default", _pod("py-b", {"app": "other"}))
    listed = core.list_namespaced_pod("default", label_selector="app in (py-a)")
    assert [p.metadata.name for p in listed.items] == ["py-a"]
    patched = core.patch_namespaced_pod("py-a", "default", {"metadata": {"labels": {"tier": "front"}}})
    assert patched.metadata.labels == {"app": "py-a", "tier": "front"}
    json_patched = core.patch_namespaced_pod(
        "py-a", "default", [{"op": "add", "path": "/metadata/labels/x", "value": "1"}]
    )
    assert json_patched.metadata.labels["x"] == "1"
    stale = core.read_namespaced_pod("py-a", "default")
    stale.metadata.labels["y"] = "2"
    core.replace_namespaced_pod("py-a", "default", stale)
    stale.metadata.labels["z"] = "3"
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_pod("py-a", "default", stale)  # its resourceVersion is now old
    assert err.value.status == 409
    for name in ("py-a", "py-b"):
        core.delete_namespaced_pod(name, "default")
    assert core.list_namespaced_pod("default", label_selector="app in (py-a,other)").items == []


def test_custom_objects_for_authorization_policy(api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    group, version, plural = "security.istio.io", "v1", "authorizationpolicies"
    body = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "py-deny"},
        "spec": {"action": "DENY", "rules": [{"from": [{"source": {"notNamespaces": ["default"]}}]}]},
    }
    created = custom.create_namespaced_custom_object(group, version, "default", plural, body)
    assert created["metadata"]["generation"] == 1
    listed = custom.list_cluster_custom_object(group, version, plural)
    assert "py-deny" in [i["metadata"]["name"] for i in listed["items"]]
    patched = custom.patch_namespaced_custom_object(
        group, version, "default", plural, "py-deny", {"spec": {"action": "AUDIT"}}
    )
    assert patched["spec"]["action"] == "AUDIT" and patched["metadata"]["generation"] == 2
    got = custom.get_namespaced_custom_object(group, version, "default", plural, "py-deny")
    assert got["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as err:
        custom.patch_namespaced_custom_object(
            group, version, "default", plural, "py-deny", {"spec": {"action": "NOPE"}}
        )
    assert err.value.status == 422
    custom.delete_namespaced_custom_object(group, version, "default", plural, "py-deny")
    with pytest.raises(ApiException) as err:
        custom.get_namespaced_custom_object(group, version, "default", plural, "py-deny")
    assert err.value.status == 404


def test_watch_streams_added_modified_deleted(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    start = core.list_namespaced_pod("default").metadata.resource_version
    seen: list[tuple[str, str]] = []
    w = watch.Watch()

    def consume() -> None:
        for event in w.stream(core.list_namespaced_pod, "default", resource_version=start, timeout_seconds=10):
            seen.append((event["type"], event["object"].metadata.name))
            if event["type"] == "DELETED" and event["object"].metadata.name == "py-w":
                w.stop()

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.3)
    core.create_namespaced_pod("default", _pod("py-w"))
    core.patch_namespaced_pod("py-w", "default", {"metadata": {"labels": {"v": "2"}}})
    core.delete_namespaced_pod("py-w", "default")
    t.join(15)
    assert [s for s in seen if s[1] == "py-w"] == [
        ("ADDED", "py-w"),
        ("MODIFIED", "py-w"),
        ("DELETED", "py-w"),
    ]


def test_custom_object_watch(api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    args = ("gateway.networking.k8s.io", "v1", "default", "httproutes")
    start = custom.list_namespaced_custom_object(*args)["metadata"]["resourceVersion"]
    events: list[str] = []
    w = watch.Watch()

    def consume() -> None:
        for event in w.stream(custom.list_namespaced_custom_object, *args, resource_version=start, timeout_seconds=10):
            events.append(event["type"])
            if event["type"] == "DELETED":
                w.stop()

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.3)
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "py-route"},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "web-api", "port": 80}],
            "rules": [{"backendRefs": [{"name": "web-api-v1", "port": 80}]}],
        },
    }
    custom.create_namespaced_custom_object(*args, route)
    custom.delete_namespaced_custom_object(*args, "py-route")
    t.join(15)
    assert events == ["ADDED", "DELETED"]
