"""Schemas and Istio validation rules of the security.istio.io/v1 kinds."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from mesh.resources.kind import CheckResult, InvalidObject, ResourceKind, check_document
from mesh.resources.registry import default_registry
from mesh.resources.security import (
    AUTHORIZATION_POLICY,
    PEER_AUTHENTICATION,
    REQUEST_AUTHENTICATION,
    SECURITY_KINDS,
)

pytestmark = pytest.mark.unit

AP, PA, RA = AUTHORIZATION_POLICY, PEER_AUTHENTICATION, REQUEST_AUTHENTICATION

# An RSA public key in JWK form (a made-up 2048-bit modulus; only the shape is checked).
_MODULUS = base64.urlsafe_b64encode(bytes(range(256))).rstrip(b"=").decode()
JWKS = json.dumps({"keys": [{"kty": "RSA", "e": "AQAB", "kid": "test-key", "n": _MODULUS}]})


def doc(kind: ResourceKind, spec: Any = None, **extra: Any) -> dict[str, Any]:
    """A document of `kind` in namespace foo; `spec=None` leaves spec out."""
    obj: dict[str, Any] = {
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "metadata": {"name": "policy", "namespace": "foo"},
    }
    if spec is not None:
        obj["spec"] = spec
    obj.update(extra)
    return obj


def causes_of(kind: ResourceKind, obj: dict[str, Any]) -> dict[str, Any]:
    """The causes of refusing `obj`, keyed by field path."""
    with pytest.raises(InvalidObject) as info:
        check_document(kind, obj)
    return {c.field: c for c in info.value.causes}


# --- valid documents, in the shapes of Istio's documentation -------------------------------------

VALID: list[tuple[str, ResourceKind, Any]] = [
    ("allow-nothing", AP, {}),
    ("allow-nothing-no-spec", AP, None),
    ("allow-nothing-selector", AP, {"selector": {"matchLabels": {"app": "httpbin"}}}),
    ("allow-all", AP, {"rules": [{}]}),
    ("deny-all", AP, {"action": "DENY", "rules": [{}]}),
    (
        "allow-by-principal",
        AP,
        {
            "action": "ALLOW",
            "rules": [
                {
                    "from": [
                        {"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}},
                        {"source": {"namespaces": ["test"]}},
                    ],
                    "to": [
                        {"operation": {"methods": ["GET"], "paths": ["/info*"]}},
                        {"operation": {"methods": ["POST"], "paths": ["/data"]}},
                    ],
                    "when": [{"key": "request.auth.claims[iss]", "values": ["https://accounts.google.com"]}],
                }
            ],
        },
    ),
    (
        "allow-gateway-target-refs",
        AP,
        {
            "targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}],
            "action": "ALLOW",
            "rules": [{"to": [{"operation": {"methods": ["GET", "HEAD"], "paths": ["/headers", "/ip*"]}}]}],
        },
    ),
    (
        "target-refs-service-and-service-entry",
        AP,
        {
            "targetRefs": [
                {"kind": "Service", "group": "", "name": "reviews"},
                {"kind": "Service", "name": "ratings"},
                {"kind": "ServiceEntry", "group": "networking.istio.io", "name": "external-svc"},
                {"kind": "GatewayClass", "group": "gateway.networking.k8s.io", "name": "istio-waypoint"},
            ],
            "rules": [{"to": [{"operation": {"ports": ["8080"]}}]}],
        },
    ),
    (
        "deny-not-namespaces",
        AP,
        {"action": "DENY", "rules": [{"from": [{"source": {"notNamespaces": ["foo", "istio-system"]}}]}]},
    ),
    (
        "deny-post-on-port",
        AP,
        {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"], "ports": ["8080"]}}]}]},
    ),
    (
        "when-jwt-groups-claim",
        AP,
        {
            "selector": {"matchLabels": {"app": "httpbin"}},
            "rules": [
                {
                    "from": [{"source": {"requestPrincipals": ["testing@secure.istio.io/testing@secure.istio.io"]}}],
                    "when": [{"key": "request.auth.claims[groups]", "values": ["group1"]}],
                }
            ],
        },
    ),
    (
        "audit",
        AP,
        {
            "selector": {"matchLabels": {"app": "myapi"}},
            "action": "AUDIT",
            "rules": [{"to": [{"operation": {"methods": ["GET"], "paths": ["/user/profile/*"]}}]}],
        },
    ),
    (
        "custom-ext-authz",
        AP,
        {
            "selector": {"matchLabels": {"app": "istio-ingressgateway"}},
            "action": "CUSTOM",
            "provider": {"name": "my-custom-authz"},
            "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}]}],
        },
    ),
    (
        "l4-sources-and-conditions",
        AP,
        {
            "rules": [
                {
                    "from": [
                        {
                            "source": {
                                "ipBlocks": ["203.0.113.4", "2001:db8::/32"],
                                "notIpBlocks": ["10.0.0.0/8"],
                            }
                        },
                        {"source": {"serviceAccounts": ["default/sleep", "curl"]}},
                        {"source": {"remoteIpBlocks": ["198.51.100.0/24"]}},
                    ],
                    "to": [
                        {
                            "operation": {
                                "notPorts": ["15008"],
                                "hosts": ["*.example.com"],
                                "paths": ["/a/{*}/b"],
                            }
                        }
                    ],
                    "when": [
                        {"key": "source.ip", "values": ["10.1.0.0/16"]},
                        {"key": "destination.port", "notValues": ["9090"]},
                        {"key": "request.headers[User-Agent]", "values": ["curl/*"]},
                        {"key": "connection.sni", "values": ["www.example.com"]},
                        {
                            "key": "experimental.envoy.filters.network.mysql_proxy[db.table]",
                            "values": ["[update]"],
                        },
                    ],
                }
            ]
        },
    ),
    ("peer-strict-mesh-wide", PA, {"mtls": {"mode": "STRICT"}}),
    ("peer-namespace-permissive", PA, {"mtls": {"mode": "PERMISSIVE"}}),
    (
        "peer-per-port",
        PA,
        {
            "selector": {"matchLabels": {"app": "example-app"}},
            "mtls": {"mode": "STRICT"},
            "portLevelMtls": {"80": {"mode": "DISABLE"}, "8443": {"mode": "UNSET"}},
        },
    ),
    (
        "request-auth-jwks-uri",
        RA,
        {
            "selector": {"matchLabels": {"app": "httpbin"}},
            "jwtRules": [
                {
                    "issuer": "issuer-foo",
                    "jwksUri": "https://example.com/.well-known/jwks.json",
                    "audiences": ["bookstore_android.apps.example.com"],
                    "fromHeaders": [{"name": "x-jwt-assertion", "prefix": "Bearer "}],
                    "fromParams": ["my_token"],
                    "fromCookies": ["session"],
                    "outputPayloadToHeader": "x-jwt-payload",
                    "outputClaimToHeaders": [{"header": "x-jwt-claim-group", "claim": "group"}],
                    "forwardOriginalToken": True,
                    "timeout": "5s",
                }
            ],
        },
    ),
    (
        "request-auth-inline-jwks",
        RA,
        {"jwtRules": [{"issuer": "testing@secure.istio.io", "jwks": JWKS}]},
    ),
    (
        "request-auth-gateway-target-ref",
        RA,
        {
            "targetRef": {
                "kind": "Gateway",
                "group": "gateway.networking.k8s.io",
                "name": "istio-ingressgateway",
            },
            "jwtRules": [
                {
                    "issuer": "https://accounts.google.com",
                    "jwks_uri": "https://www.googleapis.com/oauth2/v3/certs",
                }
            ],
        },
    ),
    (
        "request-auth-jwks-uri-without-issuer",
        RA,
        {"jwtRules": [{"jwksUri": "http://keys.example.com:8080/jwks"}]},
    ),
]


@pytest.mark.parametrize(("kind", "spec"), [(k, s) for _, k, s in VALID], ids=[name for name, _, _ in VALID])
def test_valid_documents_pass(kind: ResourceKind, spec: Any) -> None:
    result = check_document(kind, doc(kind, spec))
    assert isinstance(result, CheckResult)
    assert result.unknown == []


def test_status_is_istio_status_shaped() -> None:
    status = {
        "conditions": [{"type": "ZtunnelAccepted", "status": "True", "reason": "Accepted", "message": "attached"}],
        "observedGeneration": "1",
        "validationMessages": [{"level": "WARNING", "type": {"code": "IST0102"}}],
    }
    result = check_document(AP, doc(AP, {"rules": [{}]}, status=status))
    assert result.model.status.conditions[0].type == "ZtunnelAccepted"


def test_from_alias_reaches_the_model() -> None:
    spec = {"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}]}]}
    model = check_document(AP, doc(AP, spec)).model
    assert model.spec.rules[0].from_[0].source.principals == ["cluster.local/ns/default/sa/sleep"]
    dumped = model.spec.model_dump(exclude_none=True)
    assert dumped["rules"][0]["from"][0]["source"]["principals"] == ["cluster.local/ns/default/sa/sleep"]


# --- invalid documents: each refused with an exact field path ------------------------------------

GW = {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}

INVALID: list[tuple[str, ResourceKind, Any, str, str, str]] = [
    # (id, kind, spec, field, reason, words in the message)
    (
        "selector-and-target-refs",
        AP,
        {"selector": {"matchLabels": {"app": "a"}}, "targetRefs": [GW]},
        "spec.targetRefs",
        "FieldValueForbidden",
        "only one of selector",
    ),
    (
        "target-ref-and-target-refs",
        RA,
        {"targetRef": GW, "targetRefs": [GW]},
        "spec.targetRefs",
        "FieldValueForbidden",
        "only one",
    ),
    (
        "custom-without-provider",
        AP,
        {"action": "CUSTOM", "rules": [{}]},
        "spec.provider",
        "FieldValueRequired",
        "CUSTOM",
    ),
    (
        "custom-empty-provider-name",
        AP,
        {"action": "CUSTOM", "provider": {}, "rules": [{}]},
        "spec.provider.name",
        "FieldValueRequired",
        "",
    ),
    (
        "provider-without-custom",
        AP,
        {"provider": {"name": "ext"}, "rules": [{}]},
        "spec.provider",
        "FieldValueForbidden",
        "CUSTOM",
    ),
    ("deny-without-rules", AP, {"action": "DENY"}, "spec.rules", "FieldValueRequired", "never be triggered"),
    (
        "deny-with-empty-rules",
        AP,
        {"action": "DENY", "rules": []},
        "spec.rules",
        "FieldValueRequired",
        "never be triggered",
    ),
    (
        "custom-without-rules",
        AP,
        {"action": "CUSTOM", "provider": {"name": "ext"}},
        "spec.rules",
        "FieldValueRequired",
        "never",
    ),
    ("unknown-action", AP, {"action": "PERMIT"}, "spec.action", "FieldValueNotSupported", '"CUSTOM"'),
    (
        "empty-from-list",
        AP,
        {"rules": [{"from": []}]},
        "spec.rules[0].from",
        "FieldValueInvalid",
        "must not be empty",
    ),
    (
        "empty-to-list",
        AP,
        {"rules": [{"to": []}]},
        "spec.rules[0].to",
        "FieldValueInvalid",
        "must not be empty",
    ),
    (
        "from-without-source",
        AP,
        {"rules": [{"from": [{}]}]},
        "spec.rules[0].from[0].source",
        "FieldValueRequired",
        "source",
    ),
    (
        "empty-source",
        AP,
        {"rules": [{"from": [{"source": {}}]}]},
        "spec.rules[0].from[0].source",
        "FieldValueInvalid",
        "must not be empty",
    ),
    (
        "source-with-empty-lists",
        AP,
        {"rules": [{"from": [{"source": {"principals": []}}]}]},
        "spec.rules[0].from[0].source",
        "FieldValueInvalid",
        "must not be empty",
    ),
    (
        "to-without-operation",
        AP,
        {"rules": [{"to": [{}]}]},
        "spec.rules[0].to[0].operation",
        "FieldValueRequired",
        "operation",
    ),
    (
        "empty-operation",
        AP,
        {"rules": [{"to": [{"operation": {}}]}]},
        "spec.rules[0].to[0].operation",
        "FieldValueInvalid",
        "empty",
    ),
    (
        "empty-principal",
        AP,
        {"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep", ""]}}]}]},
        "spec.rules[0].from[0].source.principals[1]",
        "FieldValueInvalid",
        "must not be empty",
    ),
    (
        "empty-namespace",
        AP,
        {"rules": [{"from": [{"source": {"notNamespaces": [""]}}]}]},
        "spec.rules[0].from[0].source.notNamespaces[0]",
        "FieldValueInvalid",
        "must not be empty",
    ),
    (
        "bad-ip-block",
        AP,
        {"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/8", "10.0.0.300"]}}]}]},
        "spec.rules[0].from[0].source.ipBlocks[1]",
        "FieldValueInvalid",
        "CIDR",
    ),
    (
        "bad-remote-ip-prefix",
        AP,
        {"rules": [{"from": [{"source": {"notRemoteIpBlocks": ["203.0.113.0/33"]}}]}]},
        "spec.rules[0].from[0].source.notRemoteIpBlocks[0]",
        "FieldValueInvalid",
        "CIDR",
    ),
    (
        "service-accounts-with-namespaces",
        AP,
        {"rules": [{"from": [{"source": {"serviceAccounts": ["default/sleep"], "namespaces": ["default"]}}]}]},
        "spec.rules[0].from[0].source.serviceAccounts",
        "FieldValueForbidden",
        "namespaces or principals",
    ),
    (
        "bad-service-account",
        AP,
        {"rules": [{"from": [{"source": {"serviceAccounts": ["a/b/c"]}}]}]},
        "spec.rules[0].from[0].source.serviceAccounts[0]",
        "FieldValueInvalid",
        "namespace/serviceAccount",
    ),
    (
        "port-zero",
        AP,
        {"rules": [{"to": [{"operation": {"ports": ["80", "0"]}}]}]},
        "spec.rules[0].to[0].operation.ports[1]",
        "FieldValueInvalid",
        "between 1 and 65535",
    ),
    (
        "port-too-big",
        AP,
        {"rules": [{"to": [{"operation": {"notPorts": ["65536"]}}]}]},
        "spec.rules[0].to[0].operation.notPorts[0]",
        "FieldValueInvalid",
        "between 1 and 65535",
    ),
    (
        "port-name",
        AP,
        {"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]},
        "spec.rules[0].to[0].operation.ports[0]",
        "FieldValueInvalid",
        "port number",
    ),
    (
        "port-as-integer",
        AP,
        {"rules": [{"to": [{"operation": {"ports": [8080]}}]}]},
        "spec.rules[0].to[0].operation.ports[0]",
        "FieldValueInvalid",
        "valid string",
    ),
    (
        "bad-path-template",
        AP,
        {"rules": [{"to": [{"operation": {"paths": ["/foo/{**}/bar/{*}"]}}]}]},
        "spec.rules[0].to[0].operation.paths[0]",
        "FieldValueInvalid",
        "{**}",
    ),
    (
        "stray-brace-in-path",
        AP,
        {"rules": [{"to": [{"operation": {"notPaths": ["/foo/{id}"]}}]}]},
        "spec.rules[0].to[0].operation.notPaths[0]",
        "FieldValueInvalid",
        "'{' or '}'",
    ),
    (
        "unknown-when-key",
        AP,
        {"rules": [{"when": [{"key": "source.user", "values": ["a"]}]}]},
        "spec.rules[0].when[0].key",
        "FieldValueInvalid",
        "unknown attribute",
    ),
    (
        "retired-when-key",
        AP,
        {"rules": [{"when": [{"key": "destination.labels[app]", "values": ["a"]}]}]},
        "spec.rules[0].when[0].key",
        "FieldValueInvalid",
        "selector",
    ),
    (
        "claims-without-brackets",
        AP,
        {"rules": [{"when": [{"key": "request.auth.claims", "values": ["a"]}]}]},
        "spec.rules[0].when[0].key",
        "FieldValueInvalid",
        "name[key]",
    ),
    (
        "when-without-values",
        AP,
        {"rules": [{"when": [{"key": "request.auth.claims[groups]"}]}]},
        "spec.rules[0].when[0].values",
        "FieldValueRequired",
        "values or notValues",
    ),
    (
        "when-without-key",
        AP,
        {"rules": [{"when": [{"values": ["a"]}]}]},
        "spec.rules[0].when[0].key",
        "FieldValueRequired",
        "",
    ),
    (
        "when-empty-key",
        AP,
        {"rules": [{"when": [{"key": "", "values": ["a"]}]}]},
        "spec.rules[0].when[0].key",
        "FieldValueRequired",
        "",
    ),
    (
        "when-bad-ip",
        AP,
        {"rules": [{"when": [{"key": "remote.ip", "notValues": ["1.2.3.4", "not-an-ip"]}]}]},
        "spec.rules[0].when[0].notValues[1]",
        "FieldValueInvalid",
        "CIDR",
    ),
    (
        "when-bad-port",
        AP,
        {"rules": [{"when": [{"key": "destination.port", "values": ["99999"]}]}]},
        "spec.rules[0].when[0].values[0]",
        "FieldValueInvalid",
        "port",
    ),
    (
        "custom-with-principals",
        AP,
        {
            "action": "CUSTOM",
            "provider": {"name": "ext"},
            "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}]}],
        },
        "spec.rules[0].from[0].source.principals",
        "FieldValueForbidden",
        "CUSTOM",
    ),
    (
        "custom-with-jwt-condition",
        AP,
        {
            "action": "CUSTOM",
            "provider": {"name": "ext"},
            "rules": [{"when": [{"key": "request.auth.claims[iss]", "values": ["x"]}]}],
        },
        "spec.rules[0].when[0].key",
        "FieldValueForbidden",
        "CUSTOM",
    ),
    (
        "target-ref-unsupported-kind",
        AP,
        {"targetRefs": [GW, {"kind": "Pod", "name": "p"}]},
        "spec.targetRefs[1].kind",
        "FieldValueNotSupported",
        '"ServiceEntry"',
    ),
    (
        "target-ref-gateway-wrong-group",
        AP,
        {"targetRefs": [{"kind": "Gateway", "name": "gw"}]},
        "spec.targetRefs[0].group",
        "FieldValueInvalid",
        "gateway.networking.k8s.io",
    ),
    (
        "target-ref-service-entry-wrong-group",
        RA,
        {"targetRefs": [{"kind": "ServiceEntry", "group": "gateway.networking.k8s.io", "name": "se"}]},
        "spec.targetRefs[0].group",
        "FieldValueInvalid",
        "networking.istio.io",
    ),
    (
        "target-ref-cross-namespace",
        AP,
        {"targetRef": {**GW, "namespace": "other"}},
        "spec.targetRef.namespace",
        "FieldValueForbidden",
        "cross namespace",
    ),
    (
        "target-ref-without-name",
        AP,
        {"targetRefs": [{"kind": "Gateway", "group": GW["group"]}]},
        "spec.targetRefs[0].name",
        "FieldValueRequired",
        "",
    ),
    (
        "selector-wildcard-value",
        AP,
        {"selector": {"matchLabels": {"app": "http*"}}},
        "spec.selector.matchLabels[app]",
        "FieldValueInvalid",
        "wildcard",
    ),
    (
        "peer-unknown-mode",
        PA,
        {"mtls": {"mode": "ENFORCE"}},
        "spec.mtls.mode",
        "FieldValueNotSupported",
        '"STRICT"',
    ),
    (
        "peer-port-level-without-selector",
        PA,
        {"mtls": {"mode": "STRICT"}, "portLevelMtls": {"80": {"mode": "DISABLE"}}},
        "spec.portLevelMtls",
        "FieldValueForbidden",
        "selector",
    ),
    (
        "peer-port-level-empty-selector",
        PA,
        {"selector": {}, "portLevelMtls": {"80": {"mode": "DISABLE"}}},
        "spec.portLevelMtls",
        "FieldValueForbidden",
        "selector",
    ),
    (
        "peer-port-zero",
        PA,
        {"selector": {"matchLabels": {"app": "a"}}, "portLevelMtls": {"0": {"mode": "DISABLE"}}},
        "spec.portLevelMtls[0]",
        "FieldValueInvalid",
        "1-65535",
    ),
    (
        "peer-port-name",
        PA,
        {"selector": {"matchLabels": {"app": "a"}}, "portLevelMtls": {"http": {"mode": "DISABLE"}}},
        "spec.portLevelMtls[http]",
        "FieldValueInvalid",
        "1-65535",
    ),
    (
        "peer-port-level-empty-map",
        PA,
        {"selector": {"matchLabels": {"app": "a"}}, "portLevelMtls": {}},
        "spec.portLevelMtls",
        "FieldValueInvalid",
        "at least one",
    ),
    (
        "jwt-without-issuer",
        RA,
        {"jwtRules": [{"jwks": JWKS}]},
        "spec.jwtRules[0].issuer",
        "FieldValueRequired",
        "issuer",
    ),
    (
        "jwks-and-jwks-uri",
        RA,
        {"jwtRules": [{"issuer": "a", "jwksUri": "https://example.com/jwks", "jwks": JWKS}]},
        "spec.jwtRules[0].jwks",
        "FieldValueForbidden",
        "only one of jwks or jwksUri",
    ),
    (
        "jwks-uri-bad-scheme",
        RA,
        {"jwtRules": [{"issuer": "a", "jwksUri": "ftp://example.com/jwks"}]},
        "spec.jwtRules[0].jwksUri",
        "FieldValueInvalid",
        "http",
    ),
    (
        "jwks-uri-not-a-url",
        RA,
        {"jwtRules": [{"issuer": "a", "jwksUri": "example.com/jwks"}]},
        "spec.jwtRules[0].jwksUri",
        "FieldValueInvalid",
        "http",
    ),
    (
        "jwks-not-json",
        RA,
        {"jwtRules": [{"issuer": "a", "jwks": "not json"}]},
        "spec.jwtRules[0].jwks",
        "FieldValueInvalid",
        "JSON",
    ),
    (
        "from-header-without-name",
        RA,
        {"jwtRules": [{"issuer": "a", "fromHeaders": [{"prefix": "Bearer "}]}]},
        "spec.jwtRules[0].fromHeaders[0].name",
        "FieldValueRequired",
        "",
    ),
    (
        "from-header-empty-name",
        RA,
        {"jwtRules": [{"issuer": "a", "fromHeaders": [{"name": ""}]}]},
        "spec.jwtRules[0].fromHeaders[0].name",
        "FieldValueRequired",
        "header",
    ),
    (
        "empty-audience",
        RA,
        {"jwtRules": [{"issuer": "a", "audiences": ["web", ""]}]},
        "spec.jwtRules[0].audiences[1]",
        "FieldValueInvalid",
        "must not be empty",
    ),
    (
        "bad-claim-header-name",
        RA,
        {"jwtRules": [{"issuer": "a", "outputClaimToHeaders": [{"header": "x jwt", "claim": "sub"}]}]},
        "spec.jwtRules[0].outputClaimToHeaders[0].header",
        "FieldValueInvalid",
        "letters",
    ),
    (
        "timeout-not-a-duration",
        RA,
        {"jwtRules": [{"issuer": "a", "timeout": "5m"}]},
        "spec.jwtRules[0].timeout",
        "FieldValueInvalid",
        "duration",
    ),
    (
        "timeout-below-1ms",
        RA,
        {"jwtRules": [{"issuer": "a", "timeout": "0.0001s"}]},
        "spec.jwtRules[0].timeout",
        "FieldValueInvalid",
        "1ms",
    ),
]


@pytest.mark.parametrize(
    ("kind", "spec", "field", "reason", "words"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_documents_are_refused(kind: ResourceKind, spec: Any, field: str, reason: str, words: str) -> None:
    causes = causes_of(kind, doc(kind, spec))
    assert field in causes, f"expected a cause at {field}, got {sorted(causes)}"
    assert causes[field].reason == reason
    assert words in causes[field].message


def test_every_problem_is_reported_at_once() -> None:
    spec = {
        "action": "DENY",
        "rules": [
            {
                "from": [{"source": {"principals": ["a", ""]}}],
                "to": [{"operation": {"ports": ["0"]}}],
                "when": [{"key": "nope", "values": ["x"]}],
            }
        ],
    }
    assert set(causes_of(AP, doc(AP, spec))) == {
        "spec.rules[0].from[0].source.principals[1]",
        "spec.rules[0].to[0].operation.ports[0]",
        "spec.rules[0].when[0].key",
    }


def test_refusal_message_names_kind_and_object() -> None:
    with pytest.raises(InvalidObject) as info:
        check_document(AP, doc(AP, {"action": "DENY"}))
    assert info.value.message.startswith('AuthorizationPolicy "policy" is invalid: spec.rules: Required value')


# --- unknown fields ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "spec", "path"),
    [
        (
            AP,
            {"rules": [{"from": [{"source": {"principals": ["a"], "users": ["b"]}}]}]},
            "spec.rules[0].from[0].source.users",
        ),
        (
            AP,
            {"rules": [{"to": [{"operation": {"methods": ["GET"], "verbs": ["get"]}}]}]},
            "spec.rules[0].to[0].operation.verbs",
        ),
        (AP, {"targetRefs": [{**GW, "sectionName": "http"}]}, "spec.targetRefs[0].sectionName"),
        (PA, {"mtls": {"mode": "STRICT", "strict": True}}, "spec.mtls.strict"),
        (RA, {"jwtRules": [{"issuer": "a", "jwtHeaders": ["x-jwt"]}]}, "spec.jwtRules[0].jwtHeaders"),
        (RA, {"jwtRules": [], "extra": 1}, "spec.extra"),
    ],
    ids=["source", "operation", "target-ref", "peer-mtls", "jwt-rule", "spec"],
)
def test_unknown_fields_are_reported_with_their_path(kind: ResourceKind, spec: Any, path: str) -> None:
    result = check_document(kind, doc(kind, spec))
    assert result.unknown == [path]


def test_unknown_fields_do_not_hide_real_errors() -> None:
    spec = {"rules": [{"from": [{"source": {"ipBlocks": ["bad"], "users": ["b"]}}]}]}
    assert "spec.rules[0].from[0].source.ipBlocks[0]" in causes_of(AP, doc(AP, spec))


# --- kind declarations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name", "plural", "short", "columns"),
    [
        (AP, "AuthorizationPolicy", "authorizationpolicies", ("ap",), ["Name", "Action", "Age"]),
        (PA, "PeerAuthentication", "peerauthentications", ("pa",), ["Name", "Mode", "Age"]),
        (RA, "RequestAuthentication", "requestauthentications", ("ra",), ["Name", "Age"]),
    ],
)
def test_kind_declarations(
    kind: ResourceKind, name: str, plural: str, short: tuple[str, ...], columns: list[str]
) -> None:
    assert (kind.group, kind.version, kind.kind, kind.plural) == ("security.istio.io", "v1", name, plural)
    assert kind.api_version == "security.istio.io/v1"
    assert kind.resource == f"{plural}.security.istio.io"
    assert kind.short_names == short
    assert kind.categories == ("istio-io", "security-istio-io")
    assert kind.namespaced and kind.status_subresource and not kind.strategic_merge
    assert [c.name for c in kind.columns] == columns
    assert kind.columns[-1].type == "date"


def test_security_kinds_are_registered() -> None:
    assert SECURITY_KINDS == (AP, PA, RA)
    registry = default_registry()
    for kind in SECURITY_KINDS:
        assert registry.by_gvk("security.istio.io/v1", kind.kind) is kind
        assert registry.by_path("security.istio.io", "v1", kind.plural) is kind


def test_printer_columns_read_the_spec() -> None:
    action = next(c for c in AP.columns if c.name == "Action")
    mode = next(c for c in PA.columns if c.name == "Mode")
    assert action.get(doc(AP, {"action": "DENY", "rules": [{}]})) == "DENY"
    assert mode.get(doc(PA, {"mtls": {"mode": "STRICT"}})) == "STRICT"
    assert mode.get(doc(PA, {})) is None
