"""Workload-addressed traffic through a waypoint (docs/waypoint.md, "Workload traffic"): a pod bound
to a waypoint whose `istio.io/waypoint-for` admits workloads gets a filter chain matching its IP on
any port, with the pod in the chain's metadata, routed to the shared original-destination cluster
`inbound-pod`; policies targeting the Gateway apply; pod and namespace changes re-translate."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.rbac.v3 import rbac_pb2 as rbac
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import json_format

from services.xds.generators.envoy import EnvoyTranslator
from services.xds.types import CLUSTER, LISTENER, ROUTE
from tests.unit.xds import objects as o

pytestmark = pytest.mark.unit

NS = "default"
LISTENER_NAME = "waypoint/default/waypoint"
FOR_WORKLOADS = {"istio.io/waypoint-for": "workload"}
BOUND = {"istio.io/use-waypoint": "waypoint"}
CAPTURED = {"ambient.istio.io/redirection": "enabled"}
GATEWAY_REF = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}


def db(labels: dict[str, str] | None = BOUND, ip: str | None = "198.18.5.5") -> dict:
    return o.pod("db-1", ip=ip, labels={"app": "db", **(labels or {})}, annotations=CAPTURED, service_account="db")


def translated(*objects: dict, waypoint_for: dict[str, str] = FOR_WORKLOADS) -> tuple[o.Cluster, EnvoyTranslator]:
    cluster = o.Cluster(o.namespace(NS), o.gateway("waypoint", labels=waypoint_for), *objects)
    translator = EnvoyTranslator()
    translator.rebuild(cluster.store)
    return cluster, translator


def chains(translator: EnvoyTranslator) -> dict:
    return {c.name: c for c in translator.resources(LISTENER)[LISTENER_NAME].filter_chains}


def manager(chain) -> hcm.HttpConnectionManager:
    out = hcm.HttpConnectionManager()
    assert chain.filters[0].typed_config.Unpack(out)
    return out


def test_a_bound_pod_gets_a_chain_on_its_ip_for_any_port() -> None:
    _, translator = translated(db(), o.pod("other", ip="198.18.5.6"))
    chain = chains(translator)["workload/default/db-1"]
    match = chain.filter_chain_match
    assert [(p.address_prefix, p.prefix_len.value) for p in match.prefix_ranges] == [("198.18.5.5", 32)]
    assert not match.HasField("destination_port")
    assert json_format.MessageToDict(chain.metadata.filter_metadata["istio"]) == {
        "tunnel": "hbone",
        "identity": "spiffe://cluster.local/ns/default/sa/db",
        "workload": "db-1",
        "namespace": "default",
    }
    http = manager(chain)
    assert http.codec_type == hcm.HttpConnectionManager.AUTO and http.stat_prefix == "workload/default/db-1"
    assert http.rds.route_config_name == "inbound-pod"
    assert [f.name for f in http.http_filters] == ["envoy.filters.http.fault", "envoy.filters.http.router"]
    assert set(chains(translator)) == {"workload/default/db-1"}  # "other" names no waypoint


def test_the_route_and_the_original_destination_cluster() -> None:
    _, translator = translated(db())
    (vhost,) = translator.resources(ROUTE)["inbound-pod"].virtual_hosts
    (route,) = vhost.routes
    assert list(vhost.domains) == ["*"] and route.match.prefix == "/"
    assert route.route.cluster == "inbound-pod"
    assert route.route.retry_policy.num_retries.value == 2  # Istio's default retries
    cluster = translator.resources(CLUSTER)["inbound-pod"]
    assert cluster.type == cluster_pb2.Cluster.ORIGINAL_DST
    assert cluster.lb_policy == cluster_pb2.Cluster.CLUSTER_PROVIDED
    assert translator.readers((CLUSTER, "inbound-pod")) == {(NS, "waypoint")}  # only the waypoint reads it


@pytest.mark.parametrize(("waypoint_for", "bound"), [({}, False), ({"istio.io/waypoint-for": "all"}, True)])
def test_only_a_waypoint_for_workloads_gets_pod_chains(waypoint_for: dict, bound: bool) -> None:
    _, translator = translated(db(), waypoint_for=waypoint_for)
    assert ("workload/default/db-1" in chains(translator)) is bound
    assert ("inbound-pod" in translator.resources(CLUSTER)) is bound


def test_a_pod_without_an_ip_has_no_chain() -> None:
    _, translator = translated(db(ip=None))
    assert chains(translator) == {}


def test_a_policy_targeting_the_gateway_applies_to_workload_chains() -> None:
    allow = o.authorization_policy(
        "allow-get",
        targetRefs=[GATEWAY_REF],
        action="ALLOW",
        rules=[{"to": [{"operation": {"methods": ["GET"]}}]}],
    )
    service_only = o.authorization_policy(
        "svc", targetRefs=[{"group": "", "kind": "Service", "name": "db"}], action="DENY", rules=[{}]
    )
    _, translator = translated(db(), allow, service_only)
    http = manager(chains(translator)["workload/default/db-1"])
    names = [f.name for f in http.http_filters]
    assert names == ["envoy.filters.http.rbac", "envoy.filters.http.fault", "envoy.filters.http.router"]
    config = rbac_filter.RBAC()
    assert http.http_filters[0].typed_config.Unpack(config)
    assert config.rules.action == rbac.RBAC.ALLOW and set(config.rules.policies) == {"default.allow-get"}


def test_labelling_the_pod_or_its_namespace_adds_and_removes_the_chain() -> None:
    cluster, translator = translated(db(labels=None))
    assert chains(translator) == {}
    deltas = translator.update(cluster.store, [cluster.apply(db())])
    assert LISTENER_NAME in deltas.listeners.updated and "inbound-pod" in deltas.clusters.updated
    assert set(chains(translator)) == {"workload/default/db-1"}
    deltas = translator.update(cluster.store, [cluster.apply(db(labels=None))])
    assert chains(translator) == {} and "inbound-pod" in deltas.clusters.removed
    translator.update(cluster.store, [cluster.apply(o.namespace(NS, labels=BOUND))])
    assert set(chains(translator)) == {"workload/default/db-1"}
    deltas = translator.update(cluster.store, [cluster.apply(db(labels=None, ip="198.18.5.9"))])
    prefix = chains(translator)["workload/default/db-1"].filter_chain_match.prefix_ranges[0]
    assert prefix.address_prefix == "198.18.5.9"  # a new IP re-translates the waypoint
    translator.update(cluster.store, [cluster.apply(o.namespace(NS))])
    assert chains(translator) == {}
