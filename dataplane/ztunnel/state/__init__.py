"""ztunnel's view of the mesh: domain types converted once from xDS, and the indexed store.

`StateStore.apply` takes what the xDS client receives; the proxy reads through the store's
lookups and `outbound.decide`. No generated protobuf class leaves this package.
"""

from .address import HBONE_PORT, GatewayAddress, IpAddress, NamespacedHostname, NetworkAddress
from .errors import ResourceError
from .load_balancing import Endpoint
from .policy import Action, Match, Policy, Scope, ServiceAccountMatch, StringMatch, StringMatchKind
from .service import HealthPolicy, LoadBalancing, LoadBalancingMode, RoutingScope, Service
from .store import ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, GLOBAL_NAMESPACE, Rejection, StateStore
from .workload import HealthStatus, Locality, TunnelProtocol, Workload

__all__ = [
    "ADDRESS_TYPE_URL",
    "AUTHORIZATION_TYPE_URL",
    "GLOBAL_NAMESPACE",
    "HBONE_PORT",
    "Action",
    "Endpoint",
    "GatewayAddress",
    "HealthPolicy",
    "HealthStatus",
    "IpAddress",
    "LoadBalancing",
    "LoadBalancingMode",
    "Locality",
    "Match",
    "NamespacedHostname",
    "NetworkAddress",
    "Policy",
    "Rejection",
    "ResourceError",
    "RoutingScope",
    "Scope",
    "Service",
    "ServiceAccountMatch",
    "StateStore",
    "StringMatch",
    "StringMatchKind",
    "TunnelProtocol",
    "Workload",
]
