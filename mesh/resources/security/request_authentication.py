"""RequestAuthentication (security.istio.io/v1): which JWT issuers are accepted and how tokens
are found, verified and forwarded. The check follows istiod's ValidateRequestAuthentication.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from urllib.parse import urlsplit

from pydantic import Field

from ..base import Cause, Model, ProtoDuration, forbidden, invalid
from ..meta import IstioStatus, KubeObject
from .common import (
    Json,
    PolicyTargetReference,
    WorkloadSelector,
    list_causes,
    required_because,
    security_kind,
    targeting_causes,
    wire_fields,
)


class JWTHeader(Model):
    """A header carrying the token, with a prefix (such as `Bearer `) to strip."""

    name: str
    prefix: str | None = None


class ClaimToHeader(Model):
    """Copy a verified claim into a request header."""

    header: str
    claim: str


class JWTRule(Model):
    """istio.security.v1beta1.JWTRule: how to find, verify and forward one issuer's tokens."""

    issuer: str | None = None
    audiences: list[str] | None = None
    jwks_uri: str | None = Field(default=None, max_length=2048)
    # The proto field name; Istio's CRD still accepts it beside `jwksUri`.
    jwks_uri_legacy: str | None = Field(default=None, alias="jwks_uri", max_length=2048)
    jwks: str | None = None
    from_headers: list[JWTHeader] | None = None
    from_params: list[str] | None = None
    from_cookies: list[str] | None = None
    output_payload_to_header: str | None = None
    forward_original_token: bool | None = None
    output_claim_to_headers: list[ClaimToHeader] | None = None
    timeout: ProtoDuration | None = None


class RequestAuthenticationSpec(Model):
    """istio.security.v1beta1.RequestAuthentication."""

    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: list[PolicyTargetReference] | None = Field(default=None, max_length=16)
    jwt_rules: list[JWTRule] | None = Field(default=None, max_length=4096)


class RequestAuthentication(KubeObject):
    """A RequestAuthentication object."""

    spec: RequestAuthenticationSpec | None = None
    status: IstioStatus | None = None


_HEADER_NAME = re.compile(r"^[-_A-Za-z0-9]+$")


def _jwks_uri_error(value: str) -> str | None:
    # security.ParseJwksURI: http or https only, since istiod turns it into a cluster to fetch from.
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 0) >= 0
    except ValueError:  # a malformed port, which Go's strconv.Atoi refuses too
        ok = False
    return None if ok else "must be an http:// or https:// URL"


def _jwks_error(value: str) -> str | None:
    # istiod parses inline keys (jwk.Parse): a key set {"keys": [...]} or a single key {"kty": ...}.
    try:
        doc = json.loads(value)
    except ValueError:
        return "must be a JSON Web Key Set (JSON)"
    keys = doc.get("keys", [doc]) if isinstance(doc, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, dict) and "kty" in k for k in keys):
        return 'must be a JSON Web Key Set: {"keys": [...]} where every key has "kty"'
    return None


def _timeout_error(value: str) -> str | None:
    # agent.ValidateDuration and the CRD's CEL rule: at least 1ms, in whole milliseconds.
    seconds = Decimal(value[:-1])
    if seconds < Decimal("0.001"):
        return "must be a valid duration greater than 1ms"
    if seconds % Decimal("0.001"):
        return "only durations to ms precision are supported"
    return None


def _jwks_source_causes(rule: JWTRule, path: str) -> list[Cause]:
    """Issuer or jwksUri; at most one of jwksUri, jwks_uri and jwks; each source well formed."""
    causes: list[Cause] = []
    uris = (("jwksUri", rule.jwks_uri), ("jwks_uri", rule.jwks_uri_legacy))
    # Recent istiod accepts a rule without issuer when jwksUri is set (the issuer is then unchecked).
    if not rule.issuer and not any(uri for _, uri in uris):
        causes.append(required_because(f"{path}.issuer", "issuer must be set (or jwksUri)"))
    present = [name for name, value in (*uris, ("jwks", rule.jwks)) if value is not None]
    causes += [forbidden(f"{path}.{name}", "only one of jwks or jwksUri can be set") for name in present[1:]]
    for name, uri in uris:
        problem = None if uri is None else _jwks_uri_error(uri)
        if problem:
            causes.append(invalid(f"{path}.{name}", uri, problem))
    problem = _jwks_error(rule.jwks) if rule.jwks else None
    if problem:
        causes.append(invalid(f"{path}.jwks", rule.jwks, problem))
    return causes


def _jwt_rule_causes(rule: JWTRule, path: str) -> list[Cause]:
    """istiod's validateJwtRule for one rule."""
    causes = _jwks_source_causes(rule, path)
    lists = wire_fields(rule)
    for name in ("audiences", "fromParams", "fromCookies"):
        causes += list_causes(f"{path}.{name}", lists[name])
    for i, header in enumerate(rule.from_headers or []):
        if not header.name:
            causes.append(required_because(f"{path}.fromHeaders[{i}].name", "the HTTP header carrying the token"))
    for i, item in enumerate(rule.output_claim_to_headers or []):
        where = f"{path}.outputClaimToHeaders[{i}]"
        if not item.claim:
            causes.append(required_because(f"{where}.claim", "the claim to copy"))
        if not item.header:
            causes.append(required_because(f"{where}.header", "the header to create"))
        elif not _HEADER_NAME.match(item.header):
            causes.append(invalid(f"{where}.header", item.header, "must be letters, digits, '-' or '_'"))
    problem = _timeout_error(rule.timeout) if rule.timeout else None
    if problem:
        causes.append(invalid(f"{path}.timeout", rule.timeout, problem))
    return causes


def _request_authentication_check(obj: Json, model: RequestAuthentication) -> list[Cause]:
    """istiod's ValidateRequestAuthentication plus the CRD's CEL rules."""
    spec = model.spec
    if spec is None:
        return []
    causes = targeting_causes(spec)
    for i, rule in enumerate(spec.jwt_rules or []):
        causes += _jwt_rule_causes(rule, f"spec.jwtRules[{i}]")
    return causes


# Istio's CRD declares no printer columns for this kind, so kubectl shows NAME and AGE.
REQUEST_AUTHENTICATION = security_kind(
    RequestAuthentication, _request_authentication_check, "requestauthentications", "ra"
)
