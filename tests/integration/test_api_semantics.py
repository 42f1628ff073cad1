"""The verbs' semantics: optimistic concurrency, generation, status, dry run, cascades, allocation."""

from __future__ import annotations

import threading

import pytest

from tests import harness

pytestmark = pytest.mark.integration

PODS = "/api/v1/namespaces/default/pods"
SERVICES = "/api/v1/namespaces/default/services"
APS = "/apis/security.istio.io/v1/namespaces/default/authorizationpolicies"
MERGE = {"Content-Type": "application/merge-patch+json"}


def pod(name: str, **labels: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {"containers": [{"name": "c", "command": ["sleep", "1d"]}]},
    }


def test_two_writers_with_the_same_resource_version_get_exactly_one_conflict(istiod: harness.Istiod) -> None:
    with istiod.client() as client:
        current = client.post(PODS, json=pod("race")).json()
        results: list[int] = []
        barrier = threading.Barrier(2)

        def writer(label: str) -> None:
            body = {**current, "metadata": {**current["metadata"], "labels": {"app": "race", "by": label}}}
            with istiod.client() as own:
                barrier.wait()
                results.append(own.put(f"{PODS}/race", json=body).status_code)

        threads = [threading.Thread(target=writer, args=(w,)) for w in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [200, 409]
        conflict = client.put(f"{PODS}/race", json=current)
        assert conflict.status_code == 409
        assert conflict.json()["reason"] == "Conflict"
        assert "the object has been modified" in conflict.json()["message"]
        client.delete(f"{PODS}/race")


def test_resource_version_is_cluster_wide_and_increasing(istiod: harness.Istiod) -> None:
    with istiod.client() as client:
        a = int(client.post(PODS, json=pod("rv-a")).json()["metadata"]["resourceVersion"])
        b = int(
            client.post(
                APS,
                json={
                    "apiVersion": "security.istio.io/v1",
                    "kind": "AuthorizationPolicy",
                    "metadata": {"name": "rv-b"},
                    "spec": {},
                },
            ).json()["metadata"]["resourceVersion"]
        )
        c = int(client.delete(f"{PODS}/rv-a").json()["metadata"]["resourceVersion"])
        assert a < b < c
        listed = int(client.get(PODS).json()["metadata"]["resourceVersion"])
        assert listed >= c
        client.delete(f"{APS}/rv-b")


def test_server_sets_metadata_and_bumps_generation_only_on_spec_change(istiod: harness.Istiod) -> None:
    with istiod.client() as client:
        body = {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "gen"},
            "spec": {"action": "AUDIT"},
        }
        created = client.post(APS, json=body).json()
        meta = created["metadata"]
        assert meta["generation"] == 1 and len(meta["uid"]) == 36 and meta["creationTimestamp"].endswith("Z")
        labelled = client.patch(f"{APS}/gen", json={"metadata": {"labels": {"x": "y"}}}, headers=MERGE).json()
        assert labelled["metadata"]["generation"] == 1
        assert labelled["metadata"]["uid"] == meta["uid"]
        changed = client.patch(f"{APS}/gen", json={"spec": {"action": "ALLOW"}}, headers=MERGE).json()
        assert changed["metadata"]["generation"] == 2
        same = client.put(f"{APS}/gen", json=changed).json()
        assert same["metadata"]["resourceVersion"] == changed["metadata"]["resourceVersion"]  # no-op write
        client.delete(f"{APS}/gen")


def test_status_subresource_is_the_only_way_to_write_status(istiod: harness.Istiod) -> None:
    with istiod.client() as client:
        created = client.post(PODS, json={**pod("st"), "status": {"phase": "Running"}}).json()
        assert created["status"] == {"phase": "Pending"}
        body = {**created, "status": {"phase": "Running", "podIP": "198.18.16.5"}}
        main = client.put(f"{PODS}/st", json=body).json()
        assert main["status"] == {"phase": "Pending"}
        status = client.put(f"{PODS}/st/status", json=body)
        assert status.status_code == 200, status.text
        assert status.json()["status"]["podIP"] == "198.18.16.5"
        patched = client.patch(
            f"{PODS}/st/status", json={"status": {"phase": "Succeeded"}, "metadata": {"labels": {}}}, headers=MERGE
        ).json()
        assert patched["status"]["phase"] == "Succeeded" and patched["metadata"]["labels"] == {"app": "st"}
        bad = client.patch(f"{PODS}/st/status", json={"status": {"podIP": "not-an-ip"}}, headers=MERGE)
        assert bad.status_code == 422
        found = client.get(PODS + "?fieldSelector=status.phase%3DSucceeded").json()["items"]
        assert [p["metadata"]["name"] for p in found] == ["st"]
        client.delete(f"{PODS}/st")


def test_dry_run_validates_without_storing(istiod: harness.Istiod) -> None:
    with istiod.client() as client:
        revision = client.get(PODS).json()["metadata"]["resourceVersion"]
        response = client.post(PODS + "?dryRun=All", json=pod("dry"))
        assert response.status_code == 201 and response.json()["metadata"]["name"] == "dry"
        assert client.get(f"{PODS}/dry").status_code == 404
        assert client.get(PODS).json()["metadata"]["resourceVersion"] == revision


def test_generate_name_and_field_selectors(istiod: harness.Istiod) -> None:
    with istiod.client() as client:
        body = pod("x")
        body["metadata"] = {"generateName": "worker-", "labels": {"role": "worker"}}
        body["spec"]["nodeName"] = "node-1"
        made = client.post(PODS, json=body).json()
        name = made["metadata"]["name"]
        assert name.startswith("worker-") and len(name) == len("worker-") + 5
        on_node = client.get("/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1").json()["items"]
        assert [p["metadata"]["name"] for p in on_node] == [name]
        by_name = client.get(f"{PODS}?fieldSelector=metadata.name%3D{name}").json()["items"]
        assert len(by_name) == 1
        bad = client.get(PODS + "?fieldSelector=spec.colour%3Dred")
        assert bad.status_code == 400 and "field label not supported" in bad.json()["message"]
        bad = client.get(PODS + "?labelSelector=a%20in%20(")
        assert bad.status_code == 400
        gone = client.request("DELETE", PODS + "?labelSelector=role%3Dworker")
        assert gone.status_code == 200
        assert client.get(PODS + "?labelSelector=role%3Dworker").json()["items"] == []


def test_deleting_a_namespace_deletes_what_is_in_it(istiod: harness.Istiod) -> None:
    with istiod.client() as client:
        assert (
            client.post(
                "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}}
            ).status_code
            == 201
        )
        client.post("/api/v1/namespaces/doomed/pods", json=pod("p"))
        client.post(
            "/apis/security.istio.io/v1/namespaces/doomed/authorizationpolicies",
            json={
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": {"name": "ap"},
                "spec": {},
            },
        )
        assert client.delete("/api/v1/namespaces/doomed").status_code == 200
        assert client.get("/api/v1/namespaces/doomed").status_code == 404
        assert client.get("/api/v1/pods?fieldSelector=metadata.namespace%3Ddoomed").json()["items"] == []
        aps = client.get("/apis/security.istio.io/v1/authorizationpolicies").json()["items"]
        assert all(a["metadata"]["namespace"] != "doomed" for a in aps)
        refused = client.delete("/api/v1/namespaces/default")
        assert refused.status_code == 403


def test_service_cluster_ips_are_allocated_unique_and_immutable(istiod: harness.Istiod) -> None:
    with istiod.client() as client:
        ips = set()
        for i in range(5):
            svc = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"alloc-{i}"},
                "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]},
            }
            made = client.post(SERVICES, json=svc).json()
            assert made["spec"]["clusterIP"].startswith("198.19.")
            ips.add(made["spec"]["clusterIP"])
        assert len(ips) == 5
        taken = next(iter(ips))
        dup = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "dup"},
            "spec": {"clusterIP": taken, "ports": [{"port": 80}]},
        }
        refused = client.post(SERVICES, json=dup)
        assert refused.status_code == 422 and "already allocated" in refused.text
        current = client.get(f"{SERVICES}/alloc-0").json()
        changed = {**current, "spec": {**current["spec"], "clusterIP": "198.19.0.77"}}
        assert client.put(f"{SERVICES}/alloc-0", json=changed).status_code == 422
        no_ip = {**current, "spec": {k: v for k, v in current["spec"].items() if k not in ("clusterIP", "clusterIPs")}}
        kept = client.put(f"{SERVICES}/alloc-0", json=no_ip).json()
        assert kept["spec"]["clusterIP"] == current["spec"]["clusterIP"]
        for i in range(5):
            client.delete(f"{SERVICES}/alloc-{i}")


def test_pod_spec_is_immutable_but_can_be_bound_to_a_node_once(istiod: harness.Istiod) -> None:
    with istiod.client() as client:
        client.post(PODS, json=pod("imm"))
        bound = client.patch(f"{PODS}/imm", json={"spec": {"nodeName": "node-2"}}, headers=MERGE)
        assert bound.status_code == 200
        moved = client.patch(f"{PODS}/imm", json={"spec": {"nodeName": "node-3"}}, headers=MERGE)
        assert moved.status_code == 422
        changed = client.patch(f"{PODS}/imm", json={"spec": {"restartPolicy": "Never"}}, headers=MERGE)
        assert changed.status_code == 422 and "pod updates may not change" in changed.text
        client.delete(f"{PODS}/imm")


def test_delete_preconditions(istiod: harness.Istiod) -> None:
    with istiod.client() as client:
        made = client.post(PODS, json=pod("pre")).json()
        stale = client.request("DELETE", f"{PODS}/pre", json={"preconditions": {"resourceVersion": "1"}})
        assert stale.status_code == 409
        ok = client.request(
            "DELETE",
            f"{PODS}/pre",
            json={"preconditions": {"uid": made["metadata"]["uid"]}, "propagationPolicy": "Background"},
        )
        assert ok.status_code == 200
        assert client.delete(f"{PODS}/pre").status_code == 404


def test_node_ports_are_in_range_and_released_when_the_type_changes(istiod: harness.Istiod) -> None:
    with istiod.client() as client:
        svc = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "np"},
            "spec": {"type": "NodePort", "selector": {"app": "a"}, "ports": [{"port": 80}]},
        }
        made = client.post(SERVICES, json=svc).json()
        assert 30000 <= made["spec"]["ports"][0]["nodePort"] <= 32767
        outside = {**svc, "metadata": {"name": "np2"}, "spec": {**svc["spec"], "ports": [{"port": 80, "nodePort": 80}]}}
        refused = client.post(SERVICES, json=outside)
        assert refused.status_code == 422 and "30000-32767" in refused.text
        cluster_ip = client.patch(f"{SERVICES}/np", json={"spec": {"type": "ClusterIP"}}, headers=MERGE)
        assert cluster_ip.status_code == 200, cluster_ip.text
        assert "nodePort" not in cluster_ip.json()["spec"]["ports"][0]
        client.delete(f"{SERVICES}/np")
