"""Translation of stored configuration into the resources ztunnel subscribes to.

The push side uses `Translator` (index.py): `rebuild(store)` and `update(store, changes)` return
per-type-URL deltas of `istio.workload` Workloads/Services and `istio.security` Authorizations;
`to_any` packs a resource for the wire. The per-kind generators (workloads, services, waypoints,
authorization, peer_authentication) are pure functions of a `ConfigView`.
"""

from .index import Delta, Deltas, Translator
from .resources import ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, address_keys, resource_name, to_any

__all__ = [
    "ADDRESS_TYPE_URL",
    "AUTHORIZATION_TYPE_URL",
    "Delta",
    "Deltas",
    "Translator",
    "address_keys",
    "resource_name",
    "to_any",
]
