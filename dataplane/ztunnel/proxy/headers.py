"""The request headers of an outbound HBONE CONNECT (reference §6, "Request headers"). Pure.

`forwarded` carries the client's address (`for="ip:port"`, `;host=` the service when the client
addressed one); `baggage` names the source workload for the destination's telemetry:
`k8s.cluster.name`, `k8s.namespace.name`, `k8s.<kind>.name`, `service.name`, `service.version`.
"""

from __future__ import annotations

from mesh.hbone import baggage_header, forwarded_header

from ..state import Service, Workload

# Workload.workload_type → the baggage key's kind (istio/ztunnel: src/baggage.rs).
_KINDS = {"DEPLOYMENT": "deployment", "CRONJOB": "cronjob", "POD": "pod", "JOB": "job"}


def baggage_entries(source: Workload, cluster_id: str) -> dict[str, str]:
    """The baggage entries describing `source` (empty values are left out when encoded)."""
    kind = _KINDS.get(source.workload_type, "pod")
    return {
        "k8s.cluster.name": source.cluster_id or cluster_id,
        "k8s.namespace.name": source.namespace,
        f"k8s.{kind}.name": source.workload_name or source.name,
        "service.name": source.canonical_name,
        "service.version": source.canonical_revision,
    }


def connect_headers(
    source: Workload, client: tuple[str, int], service: Service | None, cluster_id: str
) -> list[tuple[str, str]]:
    """`forwarded` and `baggage` for a CONNECT from `source`'s socket `client`."""
    host = service.hostname if service is not None else None
    return [
        ("forwarded", forwarded_header(client[0], client[1], host)),
        ("baggage", baggage_header(baggage_entries(source, cluster_id))),
    ]
