"""The pure parts of ztunnel's proxies: CONNECT headers, inbound target checks, waypoint sources,
and the L4 metric labels."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dataplane.ztunnel.metrics import LABELS, Metrics, Peers, traffic_labels
from dataplane.ztunnel.proxy.headers import baggage_entries, connect_headers
from dataplane.ztunnel.proxy.inbound import Refusal, check_target
from dataplane.ztunnel.proxy.waypoints import from_waypoint
from dataplane.ztunnel.state import ADDRESS_TYPE_URL, Service, StateStore, Workload
from mesh.identity import Identity
from mesh.proto_gen.istio.workload import workload_pb2 as wl

from . import builders as b


def _workload(name: str, ips: list[str], **kw) -> Workload:
    return Workload.from_proto(b.workload(name, ips, **kw))


def _service(name: str, vips: list[str], ports: dict[int, int]) -> Service:
    return Service.from_proto(b.service(name, vips, ports))


SLEEP = _workload("sleep", ["198.18.1.2"], sa="sleep")
WEB = _workload("web-api", ["198.18.2.2"], sa="web-api")


def test_connect_headers_carry_the_client_and_the_source_workload() -> None:
    headers = dict(connect_headers(SLEEP, ("198.18.1.2", 40000), _service("web", ["198.19.0.5"], {80: 8080}), "c1"))
    assert headers["forwarded"] == 'for="198.18.1.2:40000";host=web.default.svc.cluster.local'
    assert (
        headers["baggage"]
        == "k8s.cluster.name=c1,k8s.namespace.name=default,k8s.deployment.name=sleep,service.name=sleep"
    )


def test_baggage_names_the_workload_kind_and_omits_nothing_it_knows() -> None:
    message = b.workload("api", ["10.0.0.1"])
    message.workload_type = wl.DEPLOYMENT
    message.workload_name = "api-deploy"
    message.canonical_revision = "v2"
    message.cluster_id = "east"
    entries = baggage_entries(Workload.from_proto(message), "ignored")
    assert entries == {
        "k8s.cluster.name": "east",
        "k8s.namespace.name": "default",
        "k8s.deployment.name": "api-deploy",
        "service.name": "api",
        "service.version": "v2",
    }


def test_headers_without_a_service_have_no_host() -> None:
    assert dict(connect_headers(SLEEP, ("198.18.1.2", 1), None, "c"))["forwarded"] == 'for="198.18.1.2:1"'


@pytest.mark.parametrize(
    ("authority", "local", "workload", "expected"),
    [
        ("198.18.2.2:8080", "198.18.2.2", WEB, ("198.18.2.2", 8080)),
        ("198.18.2.2", "198.18.2.2", WEB, 400),  # no port
        ("web:8080", "198.18.2.2", WEB, 400),  # a hostname is not this pod
        ("198.18.2.9:8080", "198.18.2.2", WEB, 400),  # another destination than the connection's
        ("198.18.2.2:8080", "198.18.2.2", None, 400),  # nothing known at this address
        ("198.18.2.2:8080", "198.18.2.2", SLEEP, 400),  # the workload does not hold the address
        ("198.18.2.2:15008", "198.18.2.2", WEB, 400),  # ztunnel's own port: a loop
    ],
)
def test_check_target(authority: str, local: str, workload: Workload | None, expected: object) -> None:
    result = check_target(authority, local, workload)
    if isinstance(expected, int):
        assert isinstance(result, Refusal) and result.status == expected, result
    else:
        assert result == expected


def test_only_the_waypoint_identity_from_a_waypoint_ip_is_the_waypoint() -> None:
    store = StateStore()
    gateway = wl.GatewayAddress(address=wl.NetworkAddress(address=b.raw("198.18.1.9")), hbone_mtls_port=15008)
    target = b.workload("web-api", ["198.18.2.2"], sa="web-api", waypoint=gateway)
    waypoint = b.workload("waypoint", ["198.18.1.9"], sa="waypoint")
    store.apply(ADDRESS_TYPE_URL, {target.uid: target, waypoint.uid: waypoint})
    held = store.workload(target.uid)
    assert held is not None
    waypoint_id = Identity("cluster.local", "default", "waypoint")
    assert from_waypoint(store, held, waypoint_id, "198.18.1.9")
    assert not from_waypoint(store, held, waypoint_id, "198.18.1.2")  # right identity, wrong IP
    assert not from_waypoint(store, held, SLEEP.identity, "198.18.1.9")  # right IP, wrong identity
    assert not from_waypoint(store, held, None, "198.18.1.9")  # plaintext


def test_traffic_labels_use_istios_names_and_unknown_for_missing_values() -> None:
    peers = Peers(
        reporter="source",
        source=SLEEP,
        source_principal=str(SLEEP.identity),
        destination=None,
        destination_principal=None,
        service=None,
        mtls=False,
    )
    labels = traffic_labels(peers)
    assert tuple(labels) == LABELS
    assert labels["source_principal"] == "spiffe://cluster.local/ns/default/sa/sleep"
    assert labels["source_app"] == labels["source_canonical_service"] == "sleep"
    assert labels["destination_workload"] == labels["destination_service"] == "unknown"
    assert labels["connection_security_policy"] == "unknown"
    assert labels["request_protocol"] == "tcp" and labels["response_flags"] == "-"


def test_metrics_are_exposed_as_istio_names_them() -> None:
    metrics = Metrics()
    peers = Peers(
        reporter="destination",
        source=SLEEP,
        source_principal=str(SLEEP.identity),
        destination=WEB,
        destination_principal=str(WEB.identity),
        service=_service("web-api", ["198.19.0.5"], {80: 8080}),
        mtls=True,
    )
    labels = traffic_labels(peers)
    metrics.connection_opened(labels)
    metrics.connection_closed(labels, received=100, sent=2000)
    samples = {
        s.name: s for family in text_string_to_metric_families(metrics.exposition().decode()) for s in family.samples
    }
    assert {
        "istio_tcp_connections_opened_total",
        "istio_tcp_connections_closed_total",
        "istio_tcp_received_bytes_total",
        "istio_tcp_sent_bytes_total",
    } <= set(samples)
    assert samples["istio_tcp_received_bytes_total"].value == 100
    assert samples["istio_tcp_sent_bytes_total"].value == 2000
    opened = samples["istio_tcp_connections_opened_total"].labels
    assert opened["destination_principal"] == "spiffe://cluster.local/ns/default/sa/web-api"
    assert opened["destination_service"] == "web-api.default.svc.cluster.local"
    assert opened["connection_security_policy"] == "mutual_tls"
    assert not any(name.endswith("_created") for name in samples)


def test_metric_label_values_are_escaped_and_series_kept_apart() -> None:
    """Label values come from user-chosen names (workload labels, namespaces): a quote, a
    backslash or a newline in one must not break the exposition or merge two series."""
    metrics = Metrics()
    plain = dict.fromkeys(LABELS, "unknown")
    odd = {**plain, "source_workload": 'we"ird\\name\nx'}
    metrics.connection_opened(plain)
    metrics.connection_opened(plain)
    metrics.connection_opened(odd)
    metrics.connection_closed(odd, received=7, sent=0)
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    opened = {s.labels["source_workload"]: s.value for s in families["istio_tcp_connections_opened"].samples}
    assert opened == {"unknown": 2, 'we"ird\\name\nx': 1}
    assert [s.value for s in families["istio_tcp_received_bytes"].samples] == [7]
    assert families["istio_tcp_sent_bytes"].samples == []  # nothing came back: no series
    assert families["istio_tcp_connections_opened"].type == "counter"
