"""Workload-addressed traffic (docs/waypoint.md, "Workload traffic"): a filter chain without
`destination_port` matches its pod IPs on any port and carries the pod in
`metadata.filter_metadata["istio"]` (`tunnel`, `identity`, `workload`, `namespace`, as an
endpoint's); its route sends to an `ORIGINAL_DST` cluster (`lb_policy: CLUSTER_PROVIDED`), whose
host is the CONNECT's `:authority` (the pod IP and port the client dialled), reached over the
chain's tunnel with the chain's identity checked, as Envoy's original-destination cluster sends to
the connection's original destination. Pure: conversion and checks only.
"""

from __future__ import annotations

import dataclasses

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2

from .l7.upstreams import Endpoint

ISTIO_METADATA = "istio"
TUNNELS = ("hbone", "plaintext")


class OriginalDstError(ValueError):
    """A workload chain or original-destination cluster the waypoint cannot use."""


def chain_destination(chain: listener_components_pb2.FilterChain) -> Endpoint | None:
    """The pod a chain's metadata names, as an endpoint without address and port (filled per
    CONNECT by `at`); None when the chain carries no `istio` metadata (a Service chain)."""
    if ISTIO_METADATA not in chain.metadata.filter_metadata:
        return None
    fields = chain.metadata.filter_metadata[ISTIO_METADATA].fields

    def text(key: str) -> str | None:
        return fields[key].string_value or None if key in fields else None

    tunnel = text("tunnel") or "hbone"
    if tunnel not in TUNNELS:
        raise OriginalDstError(f"metadata tunnel {tunnel!r} is not hbone or plaintext")
    return Endpoint("", 0, tunnel, text("identity"), workload=text("workload"), namespace=text("namespace"))


def at(destination: Endpoint, ip: str, port: int) -> Endpoint:
    """The chain's pod as the endpoint of one CONNECT to `ip:port`."""
    return dataclasses.replace(destination, address=ip, port=port)


def check_cluster(cluster: cluster_pb2.Cluster) -> None:
    """ORIGINAL_DST goes with CLUSTER_PROVIDED and nothing else does (Envoy refuses the same)."""
    original = cluster.type == cluster_pb2.Cluster.ORIGINAL_DST
    provided = cluster.lb_policy == cluster_pb2.Cluster.CLUSTER_PROVIDED
    if original != provided:
        raise OriginalDstError(f"cluster {cluster.name}: ORIGINAL_DST and lb_policy CLUSTER_PROVIDED go together")
