"""Gateway API references (pure): which routes attach to which listener, whether a cross-namespace
reference is allowed by a ReferenceGrant, and whether a certificate or backend reference resolves.
Shared by the ingress job (services/worker/ingress.py) and mesh-xds's ingress translation
(services/xds/generators/envoy/gateway_listeners.py), so status and data path agree.

Rules from the Gateway API specification: a parentRef's group defaults to
`gateway.networking.k8s.io`, its kind to `Gateway` and its namespace to the route's; a route
attaches to a listener when its sectionName and port (if set) match, its namespace is allowed by
the listener's `allowedRoutes.namespaces` (default `Same`), its kind is among the listener's
supported kinds, and its hostnames intersect the listener's hostname. A reference to another
namespace needs a ReferenceGrant in the *target's* namespace (GEP-709).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]

GATEWAY_GROUP = "gateway.networking.k8s.io"
ROUTE_KINDS = ("HTTPRoute", "GRPCRoute")
HTTP_PROTOCOLS = ("HTTP", "HTTPS")


def _meta(obj: Json) -> Json:
    return obj.get("metadata") or {}


@dataclass(frozen=True)
class ObjectKey:
    """A namespaced object: what a reference points at."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


# --- label selectors (metav1.LabelSelector) ---------------------------------------------------


def selector_matches(selector: Json | None, labels: dict[str, str]) -> bool:
    """`matchLabels` and `matchExpressions` (In, NotIn, Exists, DoesNotExist); empty matches all."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


# --- ReferenceGrant --------------------------------------------------------------------------


def reference_permitted(
    grants: list[Json], from_group: str, from_kind: str, from_namespace: str, to_group: str, to_kind: str, to: ObjectKey
) -> bool:
    """Whether a reference from (group, kind) objects in `from_namespace` to `to` (of `to_group`,
    `to_kind`) is allowed. Same-namespace references always are."""
    if from_namespace == to.namespace:
        return True
    for grant in grants:
        if _meta(grant).get("namespace") != to.namespace:
            continue
        spec = grant.get("spec") or {}
        allowed_from = any(
            f.get("group", "") == from_group and f.get("kind") == from_kind and f.get("namespace") == from_namespace
            for f in spec.get("from") or []
        )
        allowed_to = any(
            t.get("group", "") == to_group and t.get("kind") == to_kind and t.get("name") in (None, "", to.name)
            for t in spec.get("to") or []
        )
        if allowed_from and allowed_to:
            return True
    return False


# --- listeners -------------------------------------------------------------------------------


def supported_kinds(listener: Json) -> tuple[list[Json], list[str]]:
    """(the route kinds the listener supports, the kinds it asks for that are not supported)."""
    if str(listener.get("protocol", "")).upper() not in HTTP_PROTOCOLS:
        return [], []
    asked = (listener.get("allowedRoutes") or {}).get("kinds")
    if not asked:
        return [{"group": GATEWAY_GROUP, "kind": k} for k in ROUTE_KINDS], []
    ok, bad = [], []
    for entry in asked:
        group, kind = entry.get("group", GATEWAY_GROUP), entry.get("kind")
        if group == GATEWAY_GROUP and kind in ROUTE_KINDS:
            ok.append({"group": GATEWAY_GROUP, "kind": kind})
        else:
            bad.append(f"{group}/{kind}" if group else str(kind))
    return ok, bad


def namespace_allowed(
    listener: Json, gateway_namespace: str, route_namespace: str, namespace_labels: dict[str, str]
) -> bool:
    """`allowedRoutes.namespaces.from`: Same (default), All, or Selector over namespace labels."""
    namespaces = (listener.get("allowedRoutes") or {}).get("namespaces") or {}
    origin = namespaces.get("from") or "Same"
    if origin == "All":
        return True
    if origin == "Selector":
        return selector_matches(namespaces.get("selector"), namespace_labels)
    return route_namespace == gateway_namespace


def _hostname_matches(listener_host: str, route_host: str) -> bool:
    if listener_host == route_host:
        return True
    if listener_host.startswith("*."):
        return route_host.endswith(listener_host[1:]) or (
            route_host.startswith("*.") and route_host.endswith(listener_host[1:])
        )
    if route_host.startswith("*."):
        return listener_host.endswith(route_host[1:])
    return False


def hostnames_intersect(listener: Json, route: Json) -> bool:
    """No hostname on either side matches everything; otherwise one pair must match (wildcards
    stand for one or more leading labels)."""
    host = listener.get("hostname")
    hosts = (route.get("spec") or {}).get("hostnames") or []
    if not host or not hosts:
        return True
    return any(_hostname_matches(host.lower(), h.lower()) for h in hosts)


def effective_hostnames(listener: Json, route: Json) -> list[str]:
    """The hostnames a route serves on a listener (Gateway API: the intersection, the more specific
    of each matching pair): the route's when the listener has none (`*` when neither has any), the
    listener's when the route has none."""
    host = (listener.get("hostname") or "").lower()
    hosts = [h.lower() for h in (route.get("spec") or {}).get("hostnames") or []]
    if not hosts:
        return [host or "*"]
    if not host:
        return list(dict.fromkeys(hosts))
    out = []
    for h in hosts:
        if _hostname_matches(host, h):
            # A wildcard route host under an exact (or narrower) listener host serves the listener's.
            out.append(host if h.startswith("*.") and not host.startswith("*.") else h)
    return list(dict.fromkeys(out))


# --- certificates ----------------------------------------------------------------------------

CLIENT_CA_OPTION = "gateway.istio.io/tls-client-ca"


def certificate_refs(listener: Json, gateway_namespace: str) -> list[ObjectKey]:
    """The core Secrets a listener's `tls.certificateRefs` name (namespace defaulting to the Gateway's)."""
    out: list[ObjectKey] = []
    for ref in ((listener.get("tls") or {}).get("certificateRefs")) or []:
        if ref.get("group", "") == "" and ref.get("kind", "Secret") == "Secret":
            key = ObjectKey(ref.get("namespace") or gateway_namespace, ref.get("name", ""))
            if key not in out:
                out.append(key)
    return out


def client_ca_refs(listener: Json, gateway_namespace: str) -> list[ObjectKey]:
    """The Secrets holding the CA that client certificates must chain to: Istio's
    `tls.options["gateway.istio.io/tls-client-ca"]` (a Secret name in the Gateway's namespace) or
    Gateway API `tls.frontendValidation.caCertificateRefs` (core Secrets only)."""
    tls = listener.get("tls") or {}
    out: list[ObjectKey] = []
    option = (tls.get("options") or {}).get(CLIENT_CA_OPTION)
    if option:
        out.append(ObjectKey(gateway_namespace, str(option)))
    for ref in (tls.get("frontendValidation") or {}).get("caCertificateRefs") or []:
        if ref.get("group", "") == "" and ref.get("kind", "Secret") == "Secret":
            key = ObjectKey(ref.get("namespace") or gateway_namespace, ref.get("name", ""))
            if key not in out:
                out.append(key)
    return out


# --- parentRefs ------------------------------------------------------------------------------


def parent_key(ref: Json, route_namespace: str) -> tuple:
    """A parentRef with its defaults filled in, comparable with another."""
    return (
        ref.get("group", GATEWAY_GROUP),
        ref.get("kind", "Gateway"),
        ref.get("namespace") or route_namespace,
        ref.get("name"),
        ref.get("sectionName"),
        ref.get("port"),
    )


def refs_to_gateway(route: Json, gateway: ObjectKey) -> list[Json]:
    """The route's parentRefs that name this Gateway."""
    namespace = _meta(route).get("namespace", "")
    out = []
    for ref in (route.get("spec") or {}).get("parentRefs") or []:
        group, kind, ns, name, _, _ = parent_key(ref, namespace)
        if group == GATEWAY_GROUP and kind == "Gateway" and ns == gateway.namespace and name == gateway.name:
            out.append(ref)
    return out


@dataclass(frozen=True)
class Attachment:
    """Whether one parentRef attaches to the Gateway, to which listeners, and if not why."""

    listeners: tuple[str, ...]
    reason: str = "Accepted"
    message: str = "Route was valid"


def attach(
    ref: Json, route: Json, route_kind: str, gateway: Json, namespace_labels: dict[str, str], usable: set[str]
) -> Attachment:
    """Attach one parentRef to the Gateway's listeners (`usable`: names of listeners that accept
    routes at all, i.e. valid HTTP/HTTPS ones)."""
    route_ns = _meta(route).get("namespace", "")
    gateway_ns = _meta(gateway).get("namespace", "")
    candidates = [
        li
        for li in (gateway.get("spec") or {}).get("listeners") or []
        if li.get("name") in usable
        and ref.get("sectionName") in (None, li.get("name"))
        and ref.get("port") in (None, li.get("port"))
    ]
    if not candidates:
        return Attachment((), "NoMatchingParent", "no listener matches the parentRef's sectionName and port")
    candidates = [li for li in candidates if any(k["kind"] == route_kind for k in supported_kinds(li)[0])]
    if not candidates:
        return Attachment((), "NotAllowedByListeners", f"no matching listener allows {route_kind}")
    candidates = [li for li in candidates if namespace_allowed(li, gateway_ns, route_ns, namespace_labels)]
    if not candidates:
        return Attachment((), "NotAllowedByListeners", f"no matching listener allows routes from namespace {route_ns}")
    candidates = [li for li in candidates if hostnames_intersect(li, route)]
    if not candidates:
        return Attachment(
            (), "NoMatchingListenerHostname", "no matching listener's hostname matches the route's hostnames"
        )
    return Attachment(tuple(li["name"] for li in candidates))


# --- backends --------------------------------------------------------------------------------


def backend_problem(
    route: Json, route_kind: str, services: set[ObjectKey], grants: list[Json]
) -> tuple[str, str] | None:
    """(reason, message) for the first backendRef that does not resolve, or None when all do."""
    route_ns = _meta(route).get("namespace", "")
    for rule in (route.get("spec") or {}).get("rules") or []:
        for ref in rule.get("backendRefs") or []:
            group, kind = ref.get("group", ""), ref.get("kind", "Service")
            target = ObjectKey(ref.get("namespace") or route_ns, ref.get("name", ""))
            if group != "" or kind != "Service":
                return "InvalidKind", f"backendRef {group or 'core'}/{kind} {target} is not a Service"
            if not reference_permitted(grants, GATEWAY_GROUP, route_kind, route_ns, "", "Service", target):
                return (
                    "RefNotPermitted",
                    f"backendRef to Service {target} is not permitted: no ReferenceGrant in namespace "
                    f"{target.namespace} allows {route_kind}s from namespace {route_ns}",
                )
            if target not in services:
                return "BackendNotFound", f"backend Service {target} not found"
    return None
