"""Which policies a node's ztunnel sees."""

from __future__ import annotations

import pytest

from services.xds.model import PODS, ConfigStore
from services.xds.peers import Peer
from services.xds.types import ADDRESS, AUTHORIZATION
from services.xds.visibility import NodeScope

pytestmark = pytest.mark.unit


def pod(name: str, ns: str, node: str | None) -> dict:
    spec = {"nodeName": node} if node else {}
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


def test_a_node_sees_root_policies_and_those_of_namespaces_with_pods_on_it() -> None:
    store = ConfigStore()
    scope = NodeScope()
    store.replace_kind(PODS, [pod("a", "shop", "node-1"), pod("b", "bank", "node-2"), pod("c", "idle", None)], 1)
    assert scope.rebuild(store) == {"node-1", "node-2"}
    visible = scope.visibility(Peer("ztunnel", node="node-1"), AUTHORIZATION)
    assert visible("shop/allow-web") and visible("istio-system/istio_converted_static_strict")
    assert not visible("bank/allow-all") and not visible("idle/deny")
    assert scope.visibility(Peer("ztunnel", node="node-1"), ADDRESS)("bank/x.bank.svc.cluster.local")
    assert scope.visibility(Peer("workload", identity="spiffe://x"), AUTHORIZATION)("bank/allow-all")


def test_moving_the_last_pod_of_a_namespace_changes_the_scope_of_both_nodes() -> None:
    store = ConfigStore()
    scope = NodeScope()
    store.replace_kind(PODS, [pod("a", "shop", "node-1"), pod("a2", "shop", "node-1")], 1)
    scope.rebuild(store)
    change = store.apply(
        PODS, {**pod("a", "shop", None), "metadata": {"name": "a", "namespace": "shop"}}, 2, deleted=True
    )
    assert scope.apply([change]) == set()  # another shop pod remains on node-1
    change = store.apply(PODS, pod("a2", "shop", "node-1"), 3, deleted=True)
    assert scope.apply([change]) == {"node-1"}
    change = store.apply(PODS, pod("a3", "shop", "node-2"), 4)
    assert scope.apply([change]) == {"node-2"}
    assert scope.namespaces_on("node-2") == {"shop"} and scope.namespaces_on("node-1") == set()
