"""Gateway API references for the ingress job: the pure rules live in mesh/gateway_refs.py, shared
with mesh-xds (which serves the ingress gateway's configuration by the same attachment rules)."""

from mesh.gateway_refs import (
    GATEWAY_GROUP,
    HTTP_PROTOCOLS,
    ROUTE_KINDS,
    Attachment,
    ObjectKey,
    attach,
    backend_problem,
    certificate_refs,
    hostnames_intersect,
    namespace_allowed,
    parent_key,
    reference_permitted,
    refs_to_gateway,
    selector_matches,
    supported_kinds,
)

__all__ = [
    "GATEWAY_GROUP",
    "HTTP_PROTOCOLS",
    "ROUTE_KINDS",
    "Attachment",
    "ObjectKey",
    "attach",
    "backend_problem",
    "certificate_refs",
    "hostnames_intersect",
    "namespace_allowed",
    "parent_key",
    "reference_permitted",
    "refs_to_gateway",
    "selector_matches",
    "supported_kinds",
]
