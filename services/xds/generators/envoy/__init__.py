"""Envoy v3 xDS for proxyless gRPC clients: Listener, RouteConfiguration, Cluster and
ClusterLoadAssignment per Service (and per simple ServiceEntry host).

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
| `translator.py` | `EnvoyTranslator`: per-source outputs, dependencies, byte-level deltas |
"""

from .resources import to_any
from .translator import EnvoyDeltas, EnvoyTranslator

__all__ = ["EnvoyDeltas", "EnvoyTranslator", "to_any"]
