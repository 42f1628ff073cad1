"""Gateway API kinds (`gateway.networking.k8s.io`): Gateway, HTTPRoute and GRPCRoute (v1) and
TCPRoute (v1alpha2), ReferenceGrant (v1beta1).

In ambient mode these declare waypoints (a Gateway of class `istio-waypoint`) and the L7/L4
routing that waypoints apply (routes whose parentRefs name a Service or a Gateway).
"""

from ..kind import ResourceKind
from .gateway import GATEWAY
from .grpc_route import GRPC_ROUTE
from .http_route import HTTP_ROUTE
from .reference_grant import REFERENCE_GRANT
from .tcp_route import TCP_ROUTE

GATEWAY_KINDS: tuple[ResourceKind, ...] = (GATEWAY, HTTP_ROUTE, GRPC_ROUTE, TCP_ROUTE)
"""The Gateway and its routes (all with a status subresource)."""
GRANT_KINDS: tuple[ResourceKind, ...] = (REFERENCE_GRANT,)
"""Policy kinds of the Gateway API without status: ReferenceGrant."""

__all__ = ["GATEWAY", "GATEWAY_KINDS", "GRANT_KINDS", "GRPC_ROUTE", "HTTP_ROUTE", "REFERENCE_GRANT", "TCP_ROUTE"]
