"""Envoy v3 xDS for proxyless gRPC clients: Listener, RouteConfiguration, Cluster and
ClusterLoadAssignment per Service (and per simple ServiceEntry host); and for waypoints, per
waypoint Gateway, the Listener `waypoint/{N}/{G}` and the `inbound-vip|…` resources of the
Services bound to it (docs/waypoint.md).

`EnvoyTranslator` (translator.py) has the ztunnel `Translator`'s shape: `rebuild(store)` and
`update(store, changes)` return `EnvoyDeltas`, whose `by_type_url()` gives a `Delta` per type URL;
`to_any` packs a resource for the wire. The shapes are the ones gRPC's xDS client accepts
(../shared/reference/grpc-proxyless-xds.md); each module cites the rules it follows.

| module | does |
|---|---|
| `resources.py` | names (`{host}`, `{host}:{port}`, `outbound|{port}|{subset}|{host}`), `to_any` |
| `targets.py` | Services and ServiceEntry hosts → ports and ready endpoints |
| `lookup.py` | per-host index of routes, VirtualServices, DestinationRules; recorded reads |
| `routing.py` | matchers, cluster actions, faults, retries, timeouts in gRPC's accepted forms |
| `gateway_routes.py` | HTTPRoute / GRPCRoute attached to a Service → routes |
| `virtual_services.py` | VirtualService `http` → routes |
| `clusters.py` | Cluster (DestinationRule load balancing), ClusterLoadAssignment, subsets |
| `listeners.py` | a target's Listeners, RouteConfigurations, Clusters and endpoints |
| `waypoint_listeners.py` | a waypoint's Listener (chains per bound Service port) and what its chains use |
| `waypoint_rbac.py` | targetRefs AuthorizationPolicies → RBAC DENY / ALLOW HTTP filters |
| `waypoint_jwt.py` | targetRefs RequestAuthentications → jwt_authn filter (inline JWKS, fail closed) |
| `waypoint_clusters.py` | inbound-vip Clusters (LB, circuit breakers, outlier detection), endpoint metadata |
| `http_manager.py` | the HttpConnectionManager filter of waypoint and gateway chains (RDS, fault, router) |
| `gateway_listeners.py` | an ingress gateway's Listener `gateway/{N}/{G}` (chains per listener, TLS by SDS) |
| `gateway_vhosts.py` | an ingress gateway's RouteConfigurations `gateway|{N}|{G}|{port}` (vhosts per hostname) |
| `gateway_clusters.py` | its lookup (ReferenceGrant backends) and the `inbound-vip|…|waypoint|…` variant |
| `sds.py` | SDS Secrets `kubernetes://{ns}/{name}` (and `-cacert`) from Secret data |
| `translator.py` | `EnvoyTranslator`: per-source outputs, dependencies, readers, byte-level deltas |
"""

from .resources import to_any
from .translator import EnvoyDeltas, EnvoyTranslator

__all__ = ["EnvoyDeltas", "EnvoyTranslator", "to_any"]
