"""Unit tests for services.istiod.admission: the rules that depend on other objects.

Admission runs inside the writer against a Txn, so these tests give it a Txn over an Index and
call it in the order the repository does (defaults, before_*, write, after_*). What users rely
on: every Service gets its own address from the service range, node ports never collide, a new
namespace has its `default` ServiceAccount, deleting a namespace leaves nothing behind, and pod
specs only change where Kubernetes lets them.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from mesh.resources.core import NAMESPACE, NODE, POD, SERVICE, SERVICE_ACCOUNT
from mesh.resources.kind import ResourceKind
from mesh.resources.registry import default_registry
from services.istiod.admission import NODE_PORTS, Admission
from services.istiod.errors import ApiError
from services.istiod.store.state import ADDED, DELETED, Index, Stored, Txn

pytestmark = pytest.mark.unit

REGISTRY = default_registry()
CIDR = "10.96.0.0/24"
Json = dict[str, Any]


def obj(kind: ResourceKind, name: str, namespace: str = "", **body: Any) -> Json:
    meta = {"name": name, "uid": f"uid-{namespace}-{name}", "creationTimestamp": "2026-01-01T00:00:00Z"}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": meta, **body}


def service(name: str, namespace: str = "demo", ports: list[Json] | None = None, **spec: Any) -> Json:
    return obj(SERVICE, name, namespace, spec={"ports": ports or [{"name": "http", "port": 80}], **spec})


def pod(name: str = "web", namespace: str = "demo", **spec: Any) -> Json:
    containers = [{"name": "app", "image": "web:1", "command": ["web"]}, {"name": "proxy", "image": "proxy:1"}]
    return obj(POD, name, namespace, spec={"containers": containers, **spec})


@pytest.fixture
def index() -> Index:
    idx = Index()
    for rev, name in enumerate(("default", "istio-system", "demo", "other"), start=1):
        data = obj(NAMESPACE, name)
        data["metadata"]["resourceVersion"] = str(rev)
        idx.put(Stored(NAMESPACE.key, "", name, rev, data))
    idx.revision = 4
    return idx


@pytest.fixture
def txn(index: Index) -> Txn:
    return Txn(index, index.revision + 1)


def admission(cidr: str = CIDR) -> Admission:
    return Admission(REGISTRY, cidr)


def create(adm: Admission, txn: Txn, kind: ResourceKind, data: Json) -> Stored:
    """What Repository.create does around admission."""
    if kind.defaults is not None:
        kind.defaults(data)
    adm.before_create(txn, kind, data)
    meta = data["metadata"]
    stored = txn.write(kind.key, meta.get("namespace", ""), meta["name"], data)
    adm.after_create(txn, kind, data)
    return stored


def update(adm: Admission, txn: Txn, kind: ResourceKind, data: Json) -> Stored:
    """What Repository._update does around admission."""
    meta = data["metadata"]
    current = txn.get(kind.key, meta.get("namespace", ""), meta["name"])
    assert current is not None
    if kind.defaults is not None:
        kind.defaults(data)
    adm.before_update(txn, kind, data, current)
    return txn.write(kind.key, meta.get("namespace", ""), meta["name"], data)


def refused(call: Any, *args: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        call(*args)
    return info.value


def cause_fields(err: ApiError) -> list[str]:
    return [c["field"] for c in (err.details or {}).get("causes", [])]


# --- Service cluster IPs -------------------------------------------------------------------------


def test_cluster_ips_are_unique_inside_the_range_and_skip_reserved_addresses(txn: Txn) -> None:
    adm = admission("10.96.0.0/28")  # 16 addresses: .0 network, .1 kept back, .15 broadcast
    ips = []
    for i in range(13):
        spec = create(adm, txn, SERVICE, service(f"s{i}", "demo" if i % 2 else "other"))
        ips.append(spec.data["spec"]["clusterIP"])
        assert spec.data["spec"]["clusterIPs"] == [ips[-1]]
    assert len(set(ips)) == 13
    net = ipaddress.ip_network("10.96.0.0/28")
    assert {ipaddress.ip_address(ip) for ip in ips} == set(list(net.hosts())[1:])
    full = refused(create, adm, txn, SERVICE, service("one-too-many"))
    assert full.code == 500
    assert "10.96.0.0/28" in full.message


def test_allocated_cluster_ips_come_from_the_configured_range(txn: Txn) -> None:
    adm = admission("198.19.0.0/16")
    net = ipaddress.ip_network("198.19.0.0/16")
    for i in range(50):
        ip = ipaddress.ip_address(create(adm, txn, SERVICE, service(f"s{i}")).data["spec"]["clusterIP"])
        assert ip in net
        assert ip not in (net.network_address, net.network_address + 1, net.broadcast_address)


def test_an_explicit_free_cluster_ip_is_kept(txn: Txn) -> None:
    stored = create(admission(), txn, SERVICE, service("dns", clusterIP="10.96.0.10"))
    assert stored.data["spec"]["clusterIP"] == "10.96.0.10"
    assert stored.data["spec"]["clusterIPs"] == ["10.96.0.10"]


def test_an_explicit_cluster_ip_outside_the_range_is_invalid(txn: Txn) -> None:
    err = refused(create, admission(), txn, SERVICE, service("dns", clusterIP="10.97.0.10"))
    assert (err.code, err.reason) == (422, "Invalid")
    assert cause_fields(err) == ["spec.clusterIP"]
    assert "not in the valid range" in err.message
    assert "10.96.0.0/24" in err.message
    assert txn.changes == []


def test_an_explicit_cluster_ip_already_taken_is_invalid(txn: Txn) -> None:
    adm = admission()
    create(adm, txn, SERVICE, service("first", "other", clusterIP="10.96.0.10"))
    err = refused(create, adm, txn, SERVICE, service("second", clusterIP="10.96.0.10"))
    assert (err.code, cause_fields(err)) == (422, ["spec.clusterIP"])
    assert "already allocated" in err.message


def test_an_update_keeps_the_cluster_ip_and_refuses_changing_it(txn: Txn) -> None:
    adm = admission()
    ip = create(adm, txn, SERVICE, service("web")).data["spec"]["clusterIP"]
    # kubectl apply and PUT bodies usually leave the allocated address out.
    updated = update(adm, txn, SERVICE, service("web", ports=[{"name": "http", "port": 8080}]))
    assert (updated.data["spec"]["clusterIP"], updated.data["spec"]["clusterIPs"]) == (ip, [ip])
    assert update(adm, txn, SERVICE, service("web", clusterIP=ip)).data["spec"]["clusterIP"] == ip
    assert update(adm, txn, SERVICE, service("web", clusterIP="")).data["spec"]["clusterIP"] == ip
    other = "10.96.0.200" if ip != "10.96.0.200" else "10.96.0.201"
    err = refused(update, adm, txn, SERVICE, service("web", clusterIP=other))
    assert (err.code, cause_fields(err)) == (422, ["spec.clusterIP"])
    assert "immutable" in err.message


def test_an_external_name_service_gets_no_cluster_ip(txn: Txn) -> None:
    adm = admission()
    stored = create(adm, txn, SERVICE, service("db", type="ExternalName", externalName="db.example.com"))
    assert "clusterIP" not in stored.data["spec"]
    assert "clusterIPs" not in stored.data["spec"]


def test_a_service_turned_external_name_gives_its_cluster_ip_back(txn: Txn) -> None:
    adm = admission()
    ip = create(adm, txn, SERVICE, service("db")).data["spec"]["clusterIP"]
    # A merge patch of `type` keeps the stored clusterIP fields in the body, as from kubectl apply.
    body = service("db", type="ExternalName", externalName="db.example.com", clusterIP=ip, clusterIPs=[ip])
    changed = update(adm, txn, SERVICE, body)
    assert "clusterIP" not in changed.data["spec"]
    assert "clusterIPs" not in changed.data["spec"]
    assert create(adm, txn, SERVICE, service("reuse", clusterIP=ip)).data["spec"]["clusterIP"] == ip


def test_a_headless_service_keeps_none(txn: Txn) -> None:
    adm = admission()
    stored = create(adm, txn, SERVICE, service("stateful", clusterIP="None"))
    assert (stored.data["spec"]["clusterIP"], stored.data["spec"]["clusterIPs"]) == ("None", ["None"])
    updated = update(adm, txn, SERVICE, service("stateful", ports=[{"name": "http", "port": 81}]))
    assert (updated.data["spec"]["clusterIP"], updated.data["spec"]["clusterIPs"]) == ("None", ["None"])
    err = refused(update, adm, txn, SERVICE, service("stateful", clusterIP="10.96.0.50"))
    assert err.code == 422


def test_a_deleted_services_ip_is_free_again_in_the_same_transaction(txn: Txn) -> None:
    adm = admission()
    create(adm, txn, SERVICE, service("old", clusterIP="10.96.0.77"))
    txn.delete(SERVICE.key, "demo", "old")
    assert create(adm, txn, SERVICE, service("new", clusterIP="10.96.0.77")).data["spec"]["clusterIP"] == "10.96.0.77"


def test_a_namespaced_object_needs_its_namespace(txn: Txn) -> None:
    err = refused(create, admission(), txn, SERVICE, service("web", "missing"))
    assert (err.code, err.reason) == (404, "NotFound")
    assert 'namespaces "missing" not found' in err.message


# --- node ports ----------------------------------------------------------------------------------


def two_ports(**first: Any) -> list[Json]:
    return [{"name": "http", "port": 80, **first}, {"name": "https", "port": 443}]


def node_ports(stored: Stored) -> list[int]:
    return [p.get("nodePort") for p in stored.data["spec"]["ports"]]


def test_node_ports_are_unique_and_in_range(txn: Txn) -> None:
    adm = admission()
    seen: list[int] = []
    for i in range(20):
        svc_type = "NodePort" if i % 2 else "LoadBalancer"
        seen += node_ports(create(adm, txn, SERVICE, service(f"s{i}", ports=two_ports(), type=svc_type)))
    assert len(seen) == len(set(seen)) == 40
    assert all(p in NODE_PORTS for p in seen)
    assert range(30000, 32768) == NODE_PORTS
    assert node_ports(create(adm, txn, SERVICE, service("internal", ports=two_ports()))) == [None, None]


def test_an_explicit_node_port_is_kept_and_a_taken_one_refused(txn: Txn) -> None:
    adm = admission()
    first = create(adm, txn, SERVICE, service("a", ports=two_ports(nodePort=30080), type="NodePort"))
    assert node_ports(first)[0] == 30080
    assert node_ports(first)[1] != 30080
    err = refused(create, adm, txn, SERVICE, service("b", "other", ports=two_ports(nodePort=30080), type="NodePort"))
    assert (err.code, cause_fields(err)) == (422, ["spec.ports[0].nodePort"])
    assert "already allocated" in err.message


def test_one_service_cannot_use_a_node_port_twice(txn: Txn) -> None:
    ports = [{"name": "http", "port": 80, "nodePort": 30090}, {"name": "alt", "port": 8080, "nodePort": 30090}]
    err = refused(create, admission(), txn, SERVICE, service("a", ports=ports, type="NodePort"))
    assert (err.code, cause_fields(err)) == (422, ["spec.ports[1].nodePort"])


def test_an_update_keeps_the_node_ports(txn: Txn) -> None:
    adm = admission()
    before = node_ports(create(adm, txn, SERVICE, service("a", ports=two_ports(), type="NodePort")))
    after = update(adm, txn, SERVICE, service("a", ports=two_ports(), type="NodePort"))
    assert node_ports(after) == before


# --- namespaces ----------------------------------------------------------------------------------


def test_a_new_namespace_gets_a_default_service_account(txn: Txn) -> None:
    create(admission(), txn, NAMESPACE, obj(NAMESPACE, "team"))
    sa = txn.get(SERVICE_ACCOUNT.key, "team", "default")
    assert sa is not None
    assert (sa.data["apiVersion"], sa.data["kind"]) == ("v1", "ServiceAccount")
    assert sa.data["metadata"]["namespace"] == "team"
    assert sa.data["metadata"]["uid"]
    assert sa.data["metadata"]["creationTimestamp"].endswith("Z")
    assert [(c.op, c.obj.kind, c.obj.name) for c in txn.changes] == [
        (ADDED, NAMESPACE.key, "team"),
        (ADDED, SERVICE_ACCOUNT.key, "default"),
    ]


def _fill(index: Index, namespace: str) -> list[tuple[str, str]]:
    """One object of every namespaced kind (and one Node) in `namespace`; their (kind, name)."""
    made = []
    for kind in REGISTRY.kinds:
        if kind.namespaced:
            name = f"{kind.plural}-1"
            index.put(Stored(kind.key, namespace, name, 1, obj(kind, name, namespace)))
            made.append((kind.key, name))
    return made


def test_deleting_a_namespace_deletes_everything_in_it(index: Index) -> None:
    demo = _fill(index, "demo")
    _fill(index, "other")
    index.put(Stored(NODE.key, "", "node-1", 1, obj(NODE, "node-1")))
    assert len(demo) == sum(1 for k in REGISTRY.kinds if k.namespaced) >= 10
    txn = Txn(index, 5)
    ns = txn.get(NAMESPACE.key, "", "demo")
    assert ns is not None

    admission().before_delete(txn, NAMESPACE, ns)
    for kind in REGISTRY.kinds:
        if kind.namespaced:
            assert txn.list(kind.key, "demo") == [], kind.kind
            assert len(txn.list(kind.key, "other")) == 1, kind.kind
    assert txn.get(NODE.key, "", "node-1") is not None
    assert sorted((c.obj.kind, c.obj.name) for c in txn.changes) == sorted(demo)
    assert {c.op for c in txn.changes} == {DELETED}
    assert [c.revision for c in txn.changes] == list(range(5, 5 + len(demo)))


@pytest.mark.parametrize("name", ["default", "istio-system"])
def test_built_in_namespaces_cannot_be_deleted(index: Index, name: str) -> None:
    _fill(index, name)
    txn = Txn(index, 5)
    ns = txn.get(NAMESPACE.key, "", name)
    err = refused(admission().before_delete, txn, NAMESPACE, ns)
    assert (err.code, err.reason) == (403, "Forbidden")
    assert f'namespaces "{name}" is forbidden' in err.message
    assert txn.changes == []
    assert txn.get(SERVICE_ACCOUNT.key, name, "serviceaccounts-1") is not None


def test_deleting_another_kind_takes_nothing_with_it(index: Index) -> None:
    _fill(index, "demo")
    txn = Txn(index, 5)
    svc = txn.get(SERVICE.key, "demo", "services-1")
    admission().before_delete(txn, SERVICE, svc)  # type: ignore[arg-type]
    assert txn.changes == []


# --- pod updates ---------------------------------------------------------------------------------


@pytest.fixture
def running_pod(txn: Txn) -> Txn:
    create(admission(), txn, POD, pod())
    return txn


def test_pod_image_change_is_allowed(running_pod: Txn) -> None:
    body = pod()
    body["spec"]["containers"][0]["image"] = "web:2"
    body["spec"]["containers"][1]["image"] = "proxy:2"
    stored = update(admission(), running_pod, POD, body)
    assert [c["image"] for c in stored.data["spec"]["containers"]] == ["web:2", "proxy:2"]


def test_pod_node_name_may_be_set_once(running_pod: Txn) -> None:
    adm = admission()
    bound = update(adm, running_pod, POD, pod(nodeName="node-1"))
    assert bound.data["spec"]["nodeName"] == "node-1"
    assert update(adm, running_pod, POD, pod(nodeName="node-1")).data["spec"]["nodeName"] == "node-1"
    for change in ({"nodeName": "node-2"}, {}):  # rebinding, or unbinding
        err = refused(update, adm, running_pod, POD, pod(**change))
        assert (err.code, cause_fields(err)) == (422, ["spec.nodeName"])


@pytest.mark.parametrize(
    "edit",
    [
        lambda spec: spec["containers"][0].update(command=["other"]),
        lambda spec: spec["containers"][0].update(name="renamed"),
        lambda spec: spec["containers"].append({"name": "extra", "image": "x:1"}),
        lambda spec: spec["containers"].pop(),
        lambda spec: spec.update(serviceAccountName="admin"),
        lambda spec: spec.update(restartPolicy="Never"),
        lambda spec: spec.update(hostNetwork=True),
        lambda spec: spec.update(initContainers=[{"name": "init", "image": "i:1"}]),
    ],
    ids=[
        "command",
        "container-name",
        "add-container",
        "remove-container",
        "service-account",
        "restart",
        "host-net",
        "init",
    ],
)
def test_pod_spec_is_otherwise_immutable(running_pod: Txn, edit: Any) -> None:
    body = pod()
    POD.defaults(body)  # type: ignore[misc]
    edit(body["spec"])
    err = refused(update, admission(), running_pod, POD, body)
    assert (err.code, err.reason) == (422, "Invalid")
    assert cause_fields(err) == ["spec"]
    assert "spec.containers[*].image" in err.message


def test_pod_metadata_and_status_are_not_the_specs_business(running_pod: Txn) -> None:
    body = pod()
    body["metadata"]["labels"] = {"app": "web"}
    body["status"] = {"phase": "Running"}
    assert update(admission(), running_pod, POD, body).data["metadata"]["labels"] == {"app": "web"}


def test_pods_without_a_node_are_bound_to_the_least_loaded_schedulable_node() -> None:
    adm = admission("198.19.0.0/17")
    txn = Txn(Index(), 1)
    for name, extra in (("node-a", {}), ("node-b", {}), ("node-c", {"unschedulable": True})):
        txn.write(NODE.key, "", name, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": extra})
    placed = []
    for i in range(4):
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"p{i}", "namespace": "default"},
            "spec": {"containers": [{"name": "c"}]},
        }
        txn.write(
            "namespaces", "", "default", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}
        )
        adm.before_create(txn, POD, pod)
        txn.write(POD.key, "default", f"p{i}", pod)
        placed.append(pod["spec"]["nodeName"])
    assert placed == ["node-a", "node-b", "node-a", "node-b"]  # never the unschedulable one
    pinned = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pinned", "namespace": "default"},
        "spec": {"nodeName": "node-c", "containers": [{"name": "c"}]},
    }
    adm.before_create(txn, POD, pinned)
    assert pinned["spec"]["nodeName"] == "node-c"  # an explicit choice is kept
