"""Gateway API schemas: Gateway, HTTPRoute, GRPCRoute (v1) and TCPRoute (v1alpha2).

Valid documents are the ones Istio's ambient docs use (waypoints, bookinfo routing) plus common
ingress shapes; each invalid document breaks one rule of the Gateway API CRDs and must be
refused with a cause at the exact field path.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mesh.resources.gateway import GATEWAY, GATEWAY_KINDS, GRPC_ROUTE, HTTP_ROUTE, TCP_ROUTE
from mesh.resources.kind import InvalidObject, ResourceKind, check_document
from mesh.resources.registry import default_registry

pytestmark = pytest.mark.unit

Json = dict[str, Any]
V1 = "gateway.networking.k8s.io/v1"
V1ALPHA2 = "gateway.networking.k8s.io/v1alpha2"


def obj(kind: str, spec: Json | None, name: str = "demo", api_version: str = V1, **extra: Any) -> Json:
    doc: Json = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": "default"}}
    if spec is not None:
        doc["spec"] = spec
    doc.update(extra)
    return doc


def route(rules: list[Json], **spec: Any) -> Json:
    """An HTTPRoute attached to the `reviews` Service (an ambient mesh route)."""
    return obj("HTTPRoute", {"parentRefs": [SERVICE_PARENT], "rules": rules, **spec})


def grpc(rules: list[Json], **spec: Any) -> Json:
    return obj("GRPCRoute", {"parentRefs": [SERVICE_PARENT], "rules": rules, **spec})


def listener(**fields: Any) -> Json:
    base = {"name": "http", "port": 80, "protocol": "HTTP"}
    base.update(fields)
    return base


def gateway(*listeners: Json, **spec: Any) -> Json:
    return obj("Gateway", {"gatewayClassName": "istio", "listeners": list(listeners), **spec})


SERVICE_PARENT = {"group": "", "kind": "Service", "name": "reviews", "port": 9080}
CERT = {"kind": "Secret", "name": "example-cert"}
HTTPS = listener(name="https", port=443, protocol="HTTPS", hostname="*.example.com", tls={"certificateRefs": [CERT]})


def backend(name: str, port: int = 9080, **fields: Any) -> Json:
    return {"name": name, "port": port, **fields}


def flt(kind: str, **config: Any) -> Json:
    return {"type": kind, **config}


# --- valid documents ---------------------------------------------------------------------------

# What `istioctl waypoint generate` writes (istio/istio: istioctl/pkg/waypoint/waypoint.go).
WAYPOINT = obj(
    "Gateway",
    {
        "gatewayClassName": "istio-waypoint",
        "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
    },
    name="waypoint",
)
WAYPOINT["metadata"]["labels"] = {"istio.io/waypoint-for": "service"}

INGRESS = gateway(
    listener(hostname="bookinfo.example.com"),
    HTTPS,
    listener(
        name="https-bookinfo",
        port=443,
        protocol="HTTPS",
        hostname="bookinfo.example.com",
        tls={"mode": "Terminate", "certificateRefs": [{"name": "bookinfo-cert", "namespace": "certs"}]},
        allowedRoutes={
            "namespaces": {
                "from": "Selector",
                "selector": {"matchLabels": {"shared-gateway-access": "true"}},
            },
            "kinds": [{"kind": "HTTPRoute"}, {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}],
        },
    ),
    addresses=[{"type": "IPAddress", "value": "192.0.2.10"}, {"type": "Hostname", "value": "lb.example.com"}],
    infrastructure={"labels": {"team": "edge"}, "annotations": {"example.com/owner": "edge"}},
)

BOOKINFO_WEIGHTED = route([{"backendRefs": [backend("reviews-v1", weight=90), backend("reviews-v2", weight=10)]}])

HEADER_MATCH = route(
    [
        {
            "matches": [{"headers": [{"type": "Exact", "name": "end-user", "value": "jason"}]}],
            "backendRefs": [backend("reviews-v2")],
        },
        {"backendRefs": [backend("reviews-v1")]},
    ]
)

HEADER_MODIFIER = route(
    [
        {
            "filters": [
                flt(
                    "RequestHeaderModifier",
                    requestHeaderModifier={
                        "set": [{"name": "x-mesh", "value": "ambient"}],
                        "add": [{"name": "x-trace", "value": "on"}],
                        "remove": ["x-debug"],
                    },
                )
            ],
            "backendRefs": [backend("reviews-v1")],
        }
    ]
)

URL_REWRITE = obj(
    "HTTPRoute",
    {
        "parentRefs": [{"name": "ingress", "sectionName": "http"}],
        "hostnames": ["bookinfo.example.com"],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/api/v1"}}],
                "filters": [
                    flt(
                        "URLRewrite",
                        urlRewrite={
                            "hostname": "productpage.default.svc.cluster.local",
                            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"},
                        },
                    )
                ],
                "backendRefs": [backend("productpage")],
            }
        ],
    },
)

MIRROR = route(
    [
        {
            "filters": [
                flt("RequestMirror", requestMirror={"backendRef": backend("reviews-v3"), "percent": 25}),
                flt(
                    "RequestMirror",
                    requestMirror={"backendRef": backend("shadow"), "fraction": {"numerator": 1}},
                ),
            ],
            "backendRefs": [backend("reviews-v1")],
        }
    ]
)

TIMEOUTS = route(
    [
        {
            "matches": [{"path": {"type": "Exact", "value": "/reviews/0"}, "method": "GET"}],
            "timeouts": {"request": "10s", "backendRequest": "2s500ms"},
            "retry": {"codes": [502, 503], "attempts": 3, "backoff": "100ms"},
            "backendRefs": [backend("reviews-v1")],
        }
    ]
)

GRPC_BY_METHOD = grpc(
    [
        {
            "matches": [
                {"method": {"service": "helloworld.Greeter", "method": "SayHello"}},
                {"method": {"type": "RegularExpression", "service": "grpc\\.health\\..*"}},
            ],
            "backendRefs": [backend("greeter-v1", 50051, weight=80), backend("greeter-v2", 50051, weight=20)],
        }
    ],
    hostnames=["greeter.example.com"],
)

TCP = obj(
    "TCPRoute",
    {"parentRefs": [SERVICE_PARENT], "rules": [{"backendRefs": [backend("mysql-v1", 3306, weight=1)]}]},
    api_version=V1ALPHA2,
)

REDIRECT_TO_HTTPS = obj(
    "HTTPRoute",
    {
        "parentRefs": [
            {"name": "ingress", "sectionName": "http"},
            {"name": "ingress", "sectionName": "https"},
        ],
        "rules": [
            {"filters": [flt("RequestRedirect", requestRedirect={"scheme": "https", "statusCode": 301})]},
        ],
    },
)

CORS = route(
    [
        {
            "filters": [
                flt(
                    "CORS",
                    cors={
                        "allowOrigins": ["https://app.example.com", "https://*.example.org:8443"],
                        "allowMethods": ["GET", "POST"],
                        "allowHeaders": ["x-requested-with"],
                        "allowCredentials": True,
                        "maxAge": 600,
                    },
                )
            ],
            "backendRefs": [backend("reviews-v1")],
        }
    ]
)

GATEWAY_WITH_STATUS = copy.deepcopy(WAYPOINT)
GATEWAY_WITH_STATUS["status"] = {
    "addresses": [{"type": "IPAddress", "value": "10.96.0.20"}],
    "conditions": [
        {"type": "Accepted", "status": "True", "reason": "Accepted"},
        {"type": "Programmed", "status": "True", "reason": "Programmed"},
    ],
    "listeners": [{"name": "mesh", "attachedRoutes": 2, "conditions": [{"type": "Accepted", "status": "True"}]}],
}

ROUTE_WITH_STATUS = copy.deepcopy(BOOKINFO_WEIGHTED)
ROUTE_WITH_STATUS["status"] = {
    "parents": [
        {
            "parentRef": SERVICE_PARENT,
            "controllerName": "istio.io/gateway-controller",
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}],
        }
    ]
}

PASSTHROUGH_AND_TCP = gateway(
    listener(name="tls", port=443, protocol="TLS", hostname="db.example.com", tls={"mode": "Passthrough"}),
    listener(name="tcp", port=3306, protocol="TCP"),
    listener(name="custom", port=9000, protocol="example.com/proxy"),
)

SESSION = route(
    [
        {
            "sessionPersistence": {
                "sessionName": "bookinfo",
                "absoluteTimeout": "1h",
                "cookieConfig": {"lifetimeType": "Permanent"},
            },
            "backendRefs": [backend("reviews-v1")],
        }
    ]
)

VALID: list[tuple[str, ResourceKind, Json]] = [
    ("istio waypoint", GATEWAY, WAYPOINT),
    ("ingress http+https", GATEWAY, INGRESS),
    ("bookinfo 90/10", HTTP_ROUTE, BOOKINFO_WEIGHTED),
    ("header match", HTTP_ROUTE, HEADER_MATCH),
    ("request header modifier", HTTP_ROUTE, HEADER_MODIFIER),
    ("url rewrite", HTTP_ROUTE, URL_REWRITE),
    ("request mirror", HTTP_ROUTE, MIRROR),
    ("timeouts and retry", HTTP_ROUTE, TIMEOUTS),
    ("grpc by service/method", GRPC_ROUTE, GRPC_BY_METHOD),
    ("tcp route", TCP_ROUTE, TCP),
    ("redirect to https", HTTP_ROUTE, REDIRECT_TO_HTTPS),
    ("cors", HTTP_ROUTE, CORS),
    ("gateway status", GATEWAY, GATEWAY_WITH_STATUS),
    ("route status", HTTP_ROUTE, ROUTE_WITH_STATUS),
    ("tls passthrough, tcp, custom protocol", GATEWAY, PASSTHROUGH_AND_TCP),
    ("session persistence", HTTP_ROUTE, SESSION),
    ("minimal http route", HTTP_ROUTE, obj("HTTPRoute", {"parentRefs": [{"name": "ingress"}]})),
    ("grpc route without spec", GRPC_ROUTE, obj("GRPCRoute", None)),
]


@pytest.mark.parametrize(("kind", "doc"), [(k, d) for _, k, d in VALID], ids=[n for n, _, _ in VALID])
def test_valid_documents_pass_unchanged(kind: ResourceKind, doc: Json) -> None:
    before = copy.deepcopy(doc)
    result = check_document(kind, doc)
    assert result.unknown == []
    # Defaults (parentRef group/kind, path type, weight, ...) are validated, never written.
    assert result.obj == before
    assert doc == before


# --- invalid documents -------------------------------------------------------------------------


def _many(item: Json, count: int) -> list[Json]:
    return [copy.deepcopy(item) for _ in range(count)]


def _listeners(count: int) -> list[Json]:
    return [listener(name=f"l{i}", port=1000 + i) for i in range(count)]


HM = "RequestHeaderModifier"
INVALID: list[tuple[str, ResourceKind, Json, str, str]] = [
    # Gateway ------------------------------------------------------------------------------------
    (
        "listener names unique",
        GATEWAY,
        gateway(listener(), listener(port=8080)),
        "spec.listeners[1].name",
        "FieldValueDuplicate",
    ),
    (
        "https needs tls",
        GATEWAY,
        gateway(listener(protocol="HTTPS")),
        "spec.listeners[0].tls",
        "FieldValueRequired",
    ),
    (
        "tls protocol needs tls",
        GATEWAY,
        gateway(listener(protocol="TLS")),
        "spec.listeners[0].tls",
        "FieldValueRequired",
    ),
    (
        "http forbids tls",
        GATEWAY,
        gateway(listener(tls={"certificateRefs": [CERT]})),
        "spec.listeners[0].tls",
        "FieldValueForbidden",
    ),
    (
        "https needs Terminate",
        GATEWAY,
        gateway(listener(protocol="HTTPS", tls={"mode": "Passthrough"})),
        "spec.listeners[0].tls.mode",
        "FieldValueInvalid",
    ),
    (
        "terminate needs certificates",
        GATEWAY,
        gateway(listener(protocol="HTTPS", tls={})),
        "spec.listeners[0].tls.certificateRefs",
        "FieldValueRequired",
    ),
    (
        "hostname is not an IP",
        GATEWAY,
        gateway(listener(hostname="10.1.2.3")),
        "spec.listeners[0].hostname",
        "FieldValueInvalid",
    ),
    (
        "hostname is lowercase DNS",
        GATEWAY,
        gateway(listener(hostname="Foo.example.com")),
        "spec.listeners[0].hostname",
        "FieldValueInvalid",
    ),
    ("port at least 1", GATEWAY, gateway(listener(port=0)), "spec.listeners[0].port", "FieldValueInvalid"),
    (
        "port at most 65535",
        GATEWAY,
        gateway(listener(port=65536)),
        "spec.listeners[0].port",
        "FieldValueInvalid",
    ),
    (
        "tcp forbids hostname",
        GATEWAY,
        gateway(listener(protocol="TCP", hostname="db.example.com")),
        "spec.listeners[0].hostname",
        "FieldValueForbidden",
    ),
    (
        "protocol domain needs a path",
        GATEWAY,
        gateway(listener(protocol="example.com")),
        "spec.listeners[0].protocol",
        "FieldValueInvalid",
    ),
    (
        "port/protocol/hostname unique",
        GATEWAY,
        gateway(listener(), listener(name="http-2")),
        "spec.listeners[1]",
        "FieldValueInvalid",
    ),
    ("at most 64 listeners", GATEWAY, gateway(*_listeners(65)), "spec.listeners", "FieldValueInvalid"),
    ("at least 1 listener", GATEWAY, gateway(), "spec.listeners", "FieldValueInvalid"),
    (
        "gatewayClassName required",
        GATEWAY,
        obj("Gateway", {"listeners": [listener()]}),
        "spec.gatewayClassName",
        "FieldValueRequired",
    ),
    (
        "IPAddress value is an IP",
        GATEWAY,
        gateway(listener(), addresses=[{"value": "lb.example.com"}]),
        "spec.addresses[0].value",
        "FieldValueInvalid",
    ),
    (
        "addresses unique",
        GATEWAY,
        gateway(listener(), addresses=[{"value": "192.0.2.1"}, {"type": "IPAddress", "value": "192.0.2.1"}]),
        "spec.addresses[1].value",
        "FieldValueDuplicate",
    ),
    (
        "allowedRoutes from",
        GATEWAY,
        gateway(listener(allowedRoutes={"namespaces": {"from": "Everywhere"}})),
        "spec.listeners[0].allowedRoutes.namespaces.from",
        "FieldValueNotSupported",
    ),
    (
        "condition status enum",
        GATEWAY,
        {**WAYPOINT, "status": {"conditions": [{"type": "Programmed", "status": "Yes"}]}},
        "status.conditions[0].status",
        "FieldValueNotSupported",
    ),
    # HTTPRoute ----------------------------------------------------------------------------------
    (
        "exact path starts with /",
        HTTP_ROUTE,
        route([{"matches": [{"path": {"type": "Exact", "value": "reviews"}}]}]),
        "spec.rules[0].matches[0].path.value",
        "FieldValueInvalid",
    ),
    (
        "default PathPrefix starts with /",
        HTTP_ROUTE,
        route([{"matches": [{"path": {"value": "reviews"}}]}]),
        "spec.rules[0].matches[0].path.value",
        "FieldValueInvalid",
    ),
    (
        "path without //",
        HTTP_ROUTE,
        route([{"matches": [{"path": {"value": "/a//b"}}]}]),
        "spec.rules[0].matches[0].path.value",
        "FieldValueInvalid",
    ),
    (
        "path type enum",
        HTTP_ROUTE,
        route([{"matches": [{"path": {"type": "Prefix", "value": "/"}}]}]),
        "spec.rules[0].matches[0].path.type",
        "FieldValueNotSupported",
    ),
    (
        "filter type needs its field",
        HTTP_ROUTE,
        route([{"filters": [flt(HM)]}]),
        "spec.rules[0].filters[0].requestHeaderModifier",
        "FieldValueRequired",
    ),
    (
        "filter forbids other fields",
        HTTP_ROUTE,
        route([{"filters": [flt(HM, requestHeaderModifier={"remove": ["a"]}, urlRewrite={"hostname": "x.io"})]}]),
        "spec.rules[0].filters[0].urlRewrite",
        "FieldValueForbidden",
    ),
    (
        "redirect and rewrite not together",
        HTTP_ROUTE,
        route([{"filters": [flt("RequestRedirect", requestRedirect={}), flt("URLRewrite", urlRewrite={})]}]),
        "spec.rules[0].filters[1].type",
        "FieldValueInvalid",
    ),
    (
        "header modifier filter not repeated",
        HTTP_ROUTE,
        route([{"filters": _many(flt(HM, requestHeaderModifier={"remove": ["a"]}), 2)}]),
        "spec.rules[0].filters[1].type",
        "FieldValueInvalid",
    ),
    (
        "one action per header",
        HTTP_ROUTE,
        route(
            [
                {
                    "filters": [
                        flt(
                            HM,
                            requestHeaderModifier={"set": [{"name": "X-A", "value": "1"}], "remove": ["x-a"]},
                        )
                    ]
                }
            ]
        ),
        "spec.rules[0].filters[0].requestHeaderModifier.remove[0]",
        "FieldValueInvalid",
    ),
    (
        "header set names unique",
        HTTP_ROUTE,
        route([{"filters": [flt(HM, requestHeaderModifier={"add": _many({"name": "x", "value": "1"}, 2)})]}]),
        "spec.rules[0].filters[0].requestHeaderModifier.add[1].name",
        "FieldValueDuplicate",
    ),
    (
        "weight at most 1000000",
        HTTP_ROUTE,
        route([{"backendRefs": [backend("a", weight=1_000_001)]}]),
        "spec.rules[0].backendRefs[0].weight",
        "FieldValueInvalid",
    ),
    (
        "weight not negative",
        HTTP_ROUTE,
        route([{"backendRefs": [backend("a", weight=-1)]}]),
        "spec.rules[0].backendRefs[0].weight",
        "FieldValueInvalid",
    ),
    (
        "service backend needs port",
        HTTP_ROUTE,
        route([{"backendRefs": [{"name": "reviews-v1"}]}]),
        "spec.rules[0].backendRefs[0].port",
        "FieldValueRequired",
    ),
    (
        "explicit core service backend needs port",
        HTTP_ROUTE,
        route([{"backendRefs": [{"group": "", "kind": "Service", "name": "reviews-v1", "weight": 1}]}]),
        "spec.rules[0].backendRefs[0].port",
        "FieldValueRequired",
    ),
    (
        "mirror backend needs port",
        HTTP_ROUTE,
        route([{"filters": [flt("RequestMirror", requestMirror={"backendRef": {"name": "shadow"}})]}]),
        "spec.rules[0].filters[0].requestMirror.backendRef.port",
        "FieldValueRequired",
    ),
    (
        "mirror percent or fraction",
        HTTP_ROUTE,
        route(
            [
                {
                    "filters": [
                        flt(
                            "RequestMirror",
                            requestMirror={
                                "backendRef": backend("s"),
                                "percent": 5,
                                "fraction": {"numerator": 1},
                            },
                        )
                    ]
                }
            ]
        ),
        "spec.rules[0].filters[0].requestMirror.fraction",
        "FieldValueForbidden",
    ),
    (
        "fraction numerator <= default denominator",
        HTTP_ROUTE,
        route(
            [
                {
                    "filters": [
                        flt(
                            "RequestMirror",
                            requestMirror={"backendRef": backend("s"), "fraction": {"numerator": 101}},
                        )
                    ]
                }
            ]
        ),
        "spec.rules[0].filters[0].requestMirror.fraction.numerator",
        "FieldValueInvalid",
    ),
    (
        "redirect without backendRefs",
        HTTP_ROUTE,
        route(
            [
                {
                    "filters": [flt("RequestRedirect", requestRedirect={"scheme": "https"})],
                    "backendRefs": [backend("a")],
                }
            ]
        ),
        "spec.rules[0].filters[0].requestRedirect",
        "FieldValueForbidden",
    ),
    (
        "replacePrefixMatch needs one PathPrefix match",
        HTTP_ROUTE,
        route(
            [
                {
                    "matches": [{"path": {"type": "Exact", "value": "/a"}}],
                    "filters": [
                        flt(
                            "URLRewrite",
                            urlRewrite={"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/b"}},
                        )
                    ],
                }
            ]
        ),
        "spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch",
        "FieldValueInvalid",
    ),
    (
        "ReplaceFullPath needs replaceFullPath",
        HTTP_ROUTE,
        route([{"filters": [flt("RequestRedirect", requestRedirect={"path": {"type": "ReplaceFullPath"}})]}]),
        "spec.rules[0].filters[0].requestRedirect.path.replaceFullPath",
        "FieldValueRequired",
    ),
    (
        "redirect status code enum",
        HTTP_ROUTE,
        route([{"filters": [flt("RequestRedirect", requestRedirect={"statusCode": 304})]}]),
        "spec.rules[0].filters[0].requestRedirect.statusCode",
        "FieldValueNotSupported",
    ),
    (
        "cors * alone",
        HTTP_ROUTE,
        route([{"filters": [flt("CORS", cors={"allowOrigins": ["*", "https://a.example.com"]})]}]),
        "spec.rules[0].filters[0].cors.allowOrigins",
        "FieldValueInvalid",
    ),
    ("at most 16 rules", HTTP_ROUTE, route(_many({}, 17)), "spec.rules", "FieldValueInvalid"),
    (
        "at most 64 matches per rule",
        HTTP_ROUTE,
        route([{"matches": _many({"path": {"value": "/"}}, 65)}]),
        "spec.rules[0].matches",
        "FieldValueInvalid",
    ),
    (
        "at most 128 matches per route",
        HTTP_ROUTE,
        route([{"matches": _many({}, 64)}, {"matches": _many({}, 64)}, {}]),
        "spec.rules",
        "FieldValueInvalid",
    ),
    (
        "at most 32 parentRefs",
        HTTP_ROUTE,
        obj("HTTPRoute", {"parentRefs": [{"name": f"gw-{i}"} for i in range(33)]}),
        "spec.parentRefs",
        "FieldValueInvalid",
    ),
    (
        "at most 16 hostnames",
        HTTP_ROUTE,
        route([{}], hostnames=[f"h{i}.example.com" for i in range(17)]),
        "spec.hostnames",
        "FieldValueInvalid",
    ),
    (
        "route hostname not an IP",
        HTTP_ROUTE,
        route([{}], hostnames=["192.0.2.1"]),
        "spec.hostnames[0]",
        "FieldValueInvalid",
    ),
    (
        "parentRefs distinct",
        HTTP_ROUTE,
        obj(
            "HTTPRoute",
            {"parentRefs": [{"name": "gw"}, {"name": "gw", "group": "gateway.networking.k8s.io"}]},
        ),
        "spec.parentRefs[1]",
        "FieldValueInvalid",
    ),
    (
        "parentRefs set sectionName alike",
        HTTP_ROUTE,
        obj("HTTPRoute", {"parentRefs": [{"name": "gw", "sectionName": "http"}, {"name": "gw"}]}),
        "spec.parentRefs[1]",
        "FieldValueInvalid",
    ),
    (
        "backendRequest <= request",
        HTTP_ROUTE,
        route([{"timeouts": {"request": "1s", "backendRequest": "2s"}}]),
        "spec.rules[0].timeouts.backendRequest",
        "FieldValueInvalid",
    ),
    (
        "duration syntax",
        HTTP_ROUTE,
        route([{"timeouts": {"request": "1d"}}]),
        "spec.rules[0].timeouts.request",
        "FieldValueInvalid",
    ),
    (
        "retry codes 400-599",
        HTTP_ROUTE,
        route([{"retry": {"codes": [200]}}]),
        "spec.rules[0].retry.codes[0]",
        "FieldValueInvalid",
    ),
    (
        "rule names unique",
        HTTP_ROUTE,
        route([{"name": "a"}, {"name": "a"}]),
        "spec.rules[1].name",
        "FieldValueDuplicate",
    ),
    (
        "header match names unique",
        HTTP_ROUTE,
        route([{"matches": [{"headers": _many({"name": "x-user", "value": "a"}, 2)}]}]),
        "spec.rules[0].matches[0].headers[1].name",
        "FieldValueDuplicate",
    ),
    (
        "permanent cookie needs absoluteTimeout",
        HTTP_ROUTE,
        route([{"sessionPersistence": {"cookieConfig": {"lifetimeType": "Permanent"}}}]),
        "spec.rules[0].sessionPersistence.absoluteTimeout",
        "FieldValueRequired",
    ),
    (
        "spec required",
        HTTP_ROUTE,
        obj("HTTPRoute", None),
        "spec",
        "FieldValueRequired",
    ),
    (
        "status parent conditions not empty",
        HTTP_ROUTE,
        {
            **BOOKINFO_WEIGHTED,
            "status": {"parents": [{"parentRef": SERVICE_PARENT, "controllerName": "istio.io/x", "conditions": []}]},
        },
        "status.parents[0].conditions",
        "FieldValueInvalid",
    ),
    # GRPCRoute ----------------------------------------------------------------------------------
    (
        "grpc method needs service or method",
        GRPC_ROUTE,
        grpc([{"matches": [{"method": {"type": "Exact"}}]}]),
        "spec.rules[0].matches[0].method",
        "FieldValueRequired",
    ),
    (
        "grpc exact service syntax",
        GRPC_ROUTE,
        grpc([{"matches": [{"method": {"service": "helloworld/Greeter"}}]}]),
        "spec.rules[0].matches[0].method.service",
        "FieldValueInvalid",
    ),
    (
        "grpc at most 8 matches per rule",
        GRPC_ROUTE,
        grpc([{"matches": _many({"method": {"service": "a.B"}}, 9)}]),
        "spec.rules[0].matches",
        "FieldValueInvalid",
    ),
    (
        "grpc filter type enum",
        GRPC_ROUTE,
        grpc([{"filters": [flt("URLRewrite", urlRewrite={})]}]),
        "spec.rules[0].filters[0].type",
        "FieldValueNotSupported",
    ),
    (
        "grpc backend needs port",
        GRPC_ROUTE,
        grpc([{"backendRefs": [{"name": "greeter"}]}]),
        "spec.rules[0].backendRefs[0].port",
        "FieldValueRequired",
    ),
    # TCPRoute -----------------------------------------------------------------------------------
    (
        "tcp rules required",
        TCP_ROUTE,
        obj("TCPRoute", {"parentRefs": [SERVICE_PARENT]}, api_version=V1ALPHA2),
        "spec.rules",
        "FieldValueRequired",
    ),
    (
        "tcp backendRefs not empty",
        TCP_ROUTE,
        obj("TCPRoute", {"rules": [{"backendRefs": []}]}, api_version=V1ALPHA2),
        "spec.rules[0].backendRefs",
        "FieldValueInvalid",
    ),
    (
        "tcp service backend needs port",
        TCP_ROUTE,
        obj("TCPRoute", {"rules": [{"backendRefs": [{"name": "mysql"}]}]}, api_version=V1ALPHA2),
        "spec.rules[0].backendRefs[0].port",
        "FieldValueRequired",
    ),
]


@pytest.mark.parametrize(
    ("kind", "doc", "field", "reason"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_documents_name_the_field(kind: ResourceKind, doc: Json, field: str, reason: str) -> None:
    with pytest.raises(InvalidObject) as info:
        check_document(kind, doc)
    found = {(c.field, c.reason) for c in info.value.causes}
    assert (field, reason) in found, found


def test_every_cause_is_reported_at_once() -> None:
    doc = gateway(listener(protocol="HTTPS"), listener(hostname="10.0.0.1", name="h2", port=81))
    doc["spec"]["listeners"][0]["name"] = "h2"
    with pytest.raises(InvalidObject) as info:
        check_document(GATEWAY, doc)
    # The pydantic error (hostname) stops the semantic checks; fix it and both rules show.
    assert [c.field for c in info.value.causes] == ["spec.listeners[1].hostname"]
    doc["spec"]["listeners"][1]["hostname"] = "a.example.com"
    with pytest.raises(InvalidObject) as info:
        check_document(GATEWAY, doc)
    assert {c.field for c in info.value.causes} == {"spec.listeners[0].tls", "spec.listeners[1].name"}
    assert 'Gateway "demo" is invalid' in str(info.value)


# --- unknown fields ----------------------------------------------------------------------------


def test_unknown_fields_are_reported_not_refused() -> None:
    doc = copy.deepcopy(WAYPOINT)
    doc["spec"]["listeners"][0]["color"] = "blue"
    doc["spec"]["extra"] = True
    result = check_document(GATEWAY, doc)
    assert result.unknown == ["spec.extra", "spec.listeners[0].color"]
    assert "extra" not in result.obj["spec"]
    assert "color" not in result.obj["spec"]["listeners"][0]


def test_unknown_fields_in_routes_and_filters() -> None:
    doc = copy.deepcopy(HEADER_MODIFIER)
    doc["spec"]["rules"][0]["filters"][0]["requestHeaderModifier"]["replace"] = []
    doc["spec"]["parentRefs"][0]["weight"] = 3
    result = check_document(HTTP_ROUTE, doc)
    assert result.unknown == [
        "spec.parentRefs[0].weight",
        "spec.rules[0].filters[0].requestHeaderModifier.replace",
    ]


def test_unknown_field_does_not_hide_real_errors() -> None:
    doc = route([{"backendRefs": [{"name": "a", "colour": "red"}]}])
    with pytest.raises(InvalidObject) as info:
        check_document(HTTP_ROUTE, doc)
    assert [c.field for c in info.value.causes] == ["spec.rules[0].backendRefs[0].port"]


# --- kinds and printer columns -----------------------------------------------------------------


def test_kinds_are_registered() -> None:
    registry = default_registry()
    assert registry.by_gvk(V1, "Gateway") is GATEWAY
    assert registry.by_gvk(V1, "HTTPRoute") is HTTP_ROUTE
    assert registry.by_gvk(V1, "GRPCRoute") is GRPC_ROUTE
    assert registry.by_gvk(V1ALPHA2, "TCPRoute") is TCP_ROUTE
    assert registry.by_path("gateway.networking.k8s.io", "v1", "httproutes") is HTTP_ROUTE
    for kind in GATEWAY_KINDS:
        assert kind.namespaced and kind.status_subresource and not kind.strategic_merge
        assert kind.categories == ("gateway-api",)
        assert kind.defaults is None
    assert GATEWAY.short_names == ("gtw",)
    assert [k.plural for k in GATEWAY_KINDS] == ["gateways", "httproutes", "grpcroutes", "tcproutes"]


def _row(kind: ResourceKind, doc: Json) -> dict[str, Any]:
    return {col.name: col.get(doc) for col in kind.columns}


def test_gateway_columns() -> None:
    doc = copy.deepcopy(GATEWAY_WITH_STATUS)
    doc["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
    row = _row(GATEWAY, doc)
    assert row == {
        "Name": "waypoint",
        "Class": "istio-waypoint",
        "Address": "10.96.0.20",
        "Programmed": "True",
        "Age": "2024-01-01T00:00:00Z",
    }
    assert _row(GATEWAY, WAYPOINT)["Address"] is None
    assert _row(GATEWAY, WAYPOINT)["Programmed"] is None


def test_route_columns() -> None:
    assert _row(GRPC_ROUTE, GRPC_BY_METHOD)["Hostnames"] == '["greeter.example.com"]'
    assert _row(HTTP_ROUTE, BOOKINFO_WEIGHTED)["Hostnames"] is None
    assert [c.name for c in HTTP_ROUTE.columns] == ["Name", "Hostnames", "Age"]
    assert [c.name for c in TCP_ROUTE.columns] == ["Name", "Age"]
    assert GATEWAY.columns[-1].type == "date"
