"""The node rule as a pure decision: Hypothesis over random placements and event orders."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.identity import Identity
from services.ca.node_authorizer import NodeAuthorizer, PlacementIndex, grant_of

pytestmark = pytest.mark.unit

NAMESPACES = ["default", "shop"]
ACCOUNTS = ["sleep", "web", "waypoint"]
NODES = ["node-1", "node-2", "node-3"]
PHASES = [None, "Pending", "Running", "Succeeded", "Failed"]


def pod(name: str, ns: str, sa: str | None, node: str | None, phase: str | None) -> dict:
    spec: dict = {"containers": [{"name": "c"}]}
    if sa is not None:
        spec["serviceAccountName"] = sa
    if node is not None:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec, "status": {"phase": phase} if phase else {}}


pods = st.builds(
    pod,
    name=st.sampled_from(["p1", "p2", "p3", "p4"]),
    ns=st.sampled_from(NAMESPACES),
    sa=st.sampled_from([*ACCOUNTS, None]),
    node=st.sampled_from([*NODES, None]),
    phase=st.sampled_from(PHASES),
)
events = st.lists(st.tuples(st.sampled_from(["ADDED", "MODIFIED", "DELETED"]), pods), max_size=30)


def truth(current: dict[tuple[str, str], dict]) -> set[tuple[str, str, str]]:
    """The rule, written independently: scheduled, not finished, default account when unset."""
    out = set()
    for p in current.values():
        node = p["spec"].get("nodeName")
        if node and p["status"].get("phase") not in ("Failed", "Succeeded"):
            out.add((p["metadata"]["namespace"], p["spec"].get("serviceAccountName") or "default", node))
    return out


async def _nothing(_node: str) -> list[dict]:
    return []


@given(events)
def test_the_index_grants_exactly_what_the_current_pods_grant(seq) -> None:
    authorizer = NodeAuthorizer(PlacementIndex(), _nothing)
    current: dict[tuple[str, str], dict] = {}
    for event, p in seq:
        key = (p["metadata"]["namespace"], p["metadata"]["name"])
        if event == "DELETED":
            current.pop(key, None)
        else:
            current[key] = p
        authorizer.on_pod_event(event, p, None)
    allowed = truth(current)
    for ns in NAMESPACES:
        for sa in [*ACCOUNTS, "default"]:
            for node in NODES:
                decision = asyncio.run(authorizer.authorize(node, Identity("cluster.local", ns, sa)))
                assert decision.allowed == ((ns, sa, node) in allowed), (ns, sa, node)


@given(st.lists(pods, max_size=6))
def test_a_stale_index_is_corrected_by_asking_istiod(placed) -> None:
    """The cache knows nothing; istiod's answer alone must give the same decisions."""
    current = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in placed}

    async def from_istiod(node: str) -> list[dict]:
        return [p for p in current.values() if p["spec"].get("nodeName") == node]

    allowed = truth(current)
    authorizer = NodeAuthorizer(PlacementIndex(), from_istiod)
    for ns in NAMESPACES:
        for sa in [*ACCOUNTS, "default"]:
            for node in NODES:
                decision = asyncio.run(authorizer.authorize(node, Identity("cluster.local", ns, sa)))
                assert decision.allowed == ((ns, sa, node) in allowed)
                assert decision.allowed or f"{ns}/{sa}" in decision.reason


def test_finished_and_unscheduled_pods_grant_nothing() -> None:
    assert grant_of(pod("a", "default", "sleep", None, "Running")) is None
    assert grant_of(pod("a", "default", "sleep", "node-1", "Succeeded")) is None
    assert grant_of(pod("a", "default", "sleep", "node-1", "Failed")) is None
    assert grant_of(pod("a", "default", None, "node-1", "Pending")) == ("default", "default", "node-1")
