"""RequestAuthentications enforced by a waypoint → the `envoy.filters.http.jwt_authn` filter.

Follows Istio's JWT filter builder (istio/istio: pilot/pkg/security/authn: BuildJwtFilter,
convertToEnvoyJwtConfig) in docs/waypoint.md's shape:
- one provider per `jwtRules` entry of every RequestAuthentication that applies, named
  `{ns}.{policy}.{i}`: `issuer`, `audiences`, `forward: true`, `payload_in_metadata: "payload"`
  (what RBAC's `request.auth.*` matchers read), `fromHeaders` / `fromParams`,
  `outputPayloadToHeader`;
- the keys are always inline (`local_jwks.inline_string`): `jwks` as written; for `jwksUri`
  mesh-xds fetches the document itself (Istio's default, jwksFetchMode Istiod) through the
  resolver it is given; when it cannot (not fetched yet, unreachable, not a JWKS, no URI), the
  provider gets a JWKS whose only key nobody holds, so tokens of that issuer are refused (fail
  closed, as Istio's FakeJwks) and the problem is reported;
- one requirement for every path (`prefix: /`): any provider, or `allow_missing` (Istio: a request
  without a token passes authentication and authorization decides; a bad token gets 401).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import empty_pb2

from services.xds.generators.view import meta
from services.xds.model import REQUEST_AUTHENTICATIONS, Key

from .resources import pack
from .waypoint_rbac import JWT_FILTER, PAYLOAD

Json = dict[str, Any]
JwksResolver = Callable[[str], "str | None"]  # jwksUri -> the JWKS document, or None when unavailable

# An RSA key no one holds the private half of: a JWKS Envoy accepts that verifies no token.
UNVERIFIABLE_JWKS = json.dumps(
    {
        "keys": [
            {
                "kty": "RSA",
                "kid": "mesh-unavailable",
                "alg": "RS256",
                "e": "AQAB",
                "n": (
                    "sPgClZY6LKVmm_urC--WaFET678DaNA5m09Yhe9VJ7NUZr1YugEoA1n_Z85AdPFyzEf5VfWKjHlWc3cr9KQE-ldD5r"
                    "CXLZ8iUsXW3V8qY-AOhcHj8pcmSWsRa1wPwxH6Fl71b8-yLlSsJvg6ZuGeO-j3tl2nE7EzM_nUYRtFekMdaf5wDW4o"
                    "z_Glyfkie_fb_jpJ7LCRM-zG-d24GvUULDbkpJVAPwdRHGLBym89lUrvQVPpeIZ3QR-U5C8wqjVEU6kS6G7yZW-Kwo"
                    "lJX4cYNFZFQV2UOxFGuIIjk09VCrCVVTLYB3Kc5ysdIjRqxVmXRsNzz6fyqzDwdV_7lS5oVw"
                ),
            }
        ]
    },
    sort_keys=True,
)


@dataclass
class JwtTranslation:
    """The filter (None when no RequestAuthentication applies), the jwksUris read, and per policy
    the rules whose keys are unavailable (for its condition)."""

    filter: hcm.HttpFilter | None = None
    uris: set[str] = field(default_factory=set)
    problems: dict[Key, list[str]] = field(default_factory=dict)


def _keys(rule: Json, resolve: JwksResolver, out: JwtTranslation, key: Key) -> str:
    if rule.get("jwks"):
        return str(rule["jwks"])
    uri = rule.get("jwksUri") or ""
    if uri:
        out.uris.add(uri)
        document = resolve(uri)
        if document is not None:
            return document
        out.problems.setdefault(key, []).append(f"jwksUri {uri} could not be fetched")
    else:
        out.problems.setdefault(key, []).append(f"issuer {rule.get('issuer', '')} has neither jwks nor jwksUri")
    return UNVERIFIABLE_JWKS


def _provider(rule: Json, jwks: str) -> jwt.JwtProvider:
    provider = jwt.JwtProvider(
        issuer=rule.get("issuer") or "",
        audiences=list(rule.get("audiences") or []),
        forward=True,
        payload_in_metadata=PAYLOAD,
        forward_payload_header=rule.get("outputPayloadToHeader") or "",
        from_params=list(rule.get("fromParams") or []),
    )
    provider.local_jwks.inline_string = jwks
    for header in rule.get("fromHeaders") or []:
        provider.from_headers.append(jwt.JwtHeader(name=header["name"], value_prefix=header.get("prefix") or ""))
    return provider


def jwt_filter(policies: Iterable[Json], resolve: JwksResolver) -> JwtTranslation:
    """The jwt_authn filter for the RequestAuthentications that apply to one filter chain."""
    out = JwtTranslation()
    providers: dict[str, jwt.JwtProvider] = {}
    for ra in policies:
        namespace, name = meta(ra).get("namespace", ""), meta(ra)["name"]
        key = Key(REQUEST_AUTHENTICATIONS, namespace, name)
        for i, rule in enumerate((ra.get("spec") or {}).get("jwtRules") or []):
            providers[f"{namespace}.{name}.{i}"] = _provider(rule, _keys(rule, resolve, out, key))
    if not providers:
        return out
    requirements = [jwt.JwtRequirement(provider_name=p) for p in providers]
    requirements.append(jwt.JwtRequirement(allow_missing=empty_pb2.Empty()))
    rule = jwt.RequirementRule(
        match=rc.RouteMatch(prefix="/"),
        requires=jwt.JwtRequirement(requires_any=jwt.JwtRequirementOrList(requirements=requirements)),
    )
    config = jwt.JwtAuthentication(providers=providers, rules=[rule])
    out.filter = hcm.HttpFilter(name=JWT_FILTER, typed_config=pack(config))
    return out


def jwks_condition(problems: list[str]) -> dict[str, str]:
    """The WaypointAccepted condition of a RequestAuthentication whose keys are unavailable."""
    message = "; ".join(problems) + ": tokens of these issuers are refused until their keys can be read"
    return {"type": "WaypointAccepted", "status": "False", "reason": "JwksUnavailable", "message": message}
