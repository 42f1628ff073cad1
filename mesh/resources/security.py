"""security.istio.io/v1 kinds: AuthorizationPolicy, PeerAuthentication, RequestAuthentication.

The schemas follow Istio's CRDs (v1 and v1beta1 share one schema). The `check` functions add the
rules that Istio enforces beyond the OpenAPI schema: the CEL rules in its CRDs and the checks in
istiod's validating webhook (pkg/config/validation and pkg/config/security). Anything Istio only
warns about (an empty selector, a DENY rule with HTTP-only fields) is accepted here.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field

from .base import Cause, Model, ProtoDuration, forbidden, invalid
from .kind import Column, ResourceKind, age, jsonpath
from .meta import IstioStatus, KubeObject

Json = dict[str, Any]
Check = Callable[[str], str | None]

GROUP = "security.istio.io"
VERSION = "v1"
CATEGORIES = ("istio-io", "security-istio-io")

# --- shared pieces: workload selector and policy target references ------------------------------


class WorkloadSelector(Model):
    """istio.type.v1beta1.WorkloadSelector: the labels of the workloads a policy applies to."""

    match_labels: dict[str, str] | None = None


class PolicyTargetReference(Model):
    """istio.type.v1beta1.PolicyTargetReference: a Gateway, GatewayClass, Service or ServiceEntry."""

    group: str | None = Field(
        default=None,
        max_length=253,
        pattern=r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    )
    kind: str = Field(min_length=1, max_length=63, pattern=r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = None


# istiod's allowedTargetRefs: the group is compared in canonical form, where "" and "core" are the
# same group (Service). Only the group and kind are checked, never a version.
_GATEWAY_API = ("gateway.networking.k8s.io",)
_TARGET_KINDS = {"Gateway": _GATEWAY_API, "GatewayClass": _GATEWAY_API, "Service": ("", "core")}
_TARGET_KINDS["ServiceEntry"] = ("networking.istio.io",)


def _required(path: str, why: str) -> Cause:
    # apimachinery's field.Required with a detail: "Required value: <why>".
    return Cause(path, "FieldValueRequired", f"Required value: {why}")


def _selector_causes(selector: WorkloadSelector | None) -> list[Cause]:
    # The CRD's CEL rules and istiod's validateWorkloadSelector: no empty keys, no wildcards.
    # An empty selector is only a warning in Istio ("specified without labels"), so it passes.
    causes: list[Cause] = []
    path = "spec.selector.matchLabels"
    for key, value in ((selector.match_labels if selector else None) or {}).items():
        if not key:
            causes.append(invalid(path, key, "key must not be empty"))
        elif "*" in key:
            causes.append(invalid(path, key, "wildcard not allowed in label key match"))
        if "*" in value:
            causes.append(invalid(f"{path}[{key}]", value, "wildcard not allowed in label value match"))
        elif len(value) > 63:
            causes.append(invalid(f"{path}[{key}]", value, "must be no more than 63 characters"))
    return causes


def _target_ref_causes(ref: PolicyTargetReference, path: str) -> list[Cause]:
    causes: list[Cause] = []
    if ref.namespace:
        causes.append(forbidden(f"{path}.namespace", "cross namespace referencing is not supported"))
    groups = _TARGET_KINDS.get(ref.kind)
    if groups is None:
        supported = ", ".join(f'"{k}"' for k in _TARGET_KINDS)
        message = f'Unsupported value: "{ref.kind}": supported values: {supported}'
        causes.append(Cause(f"{path}.kind", "FieldValueNotSupported", message))
    elif (ref.group or "") not in groups:
        causes.append(invalid(f"{path}.group", ref.group or "", f"kind {ref.kind} is in group '{groups[0]}'"))
    return causes


def _targeting_causes(spec: Any) -> list[Cause]:
    """Selector, targetRef and targetRefs: at most one may be set, and each must be well formed."""
    # The CRD's CEL rule counts presence (`has()`), so even an empty list takes the slot.
    slots = {"selector": spec.selector, "targetRef": spec.target_ref, "targetRefs": spec.target_refs}
    present = [name for name, value in slots.items() if value is not None]
    why = "only one of selector, targetRef or targetRefs may be set"
    causes = [forbidden(f"spec.{name}", f"{why} (found {present[0]})") for name in present[1:]]
    causes += _selector_causes(spec.selector)
    if spec.target_ref is not None:
        causes += _target_ref_causes(spec.target_ref, "spec.targetRef")
    for i, ref in enumerate(spec.target_refs or []):
        causes += _target_ref_causes(ref, f"spec.targetRefs[{i}]")
    return causes


def _kind(model: type[KubeObject], check: Any, plural: str, short: str, *cols: Column) -> ResourceKind:
    """A kind as Istio's CRDs declare it: namespaced, status subresource, NAME, its columns, AGE."""
    return ResourceKind(
        group=GROUP,
        version=VERSION,
        kind=model.__name__,
        plural=plural,
        namespaced=True,
        model=model,
        short_names=(short,),
        categories=CATEGORIES,
        status_subresource=True,
        columns=(Column("Name", jsonpath(".metadata.name"), format="name"), *cols, age()),
        check=check,
    )


# --- value checks shared by rules (istio/istio: pkg/config/security/security.go) -----------------

_PORT = re.compile(r"^[0-9]+$")
_PATH_LITERAL = re.compile(r"^[a-zA-Z0-9-._~%!$&'()+,;:@=]+$")  # RFC 3986 pchar, as Envoy wants


def _ip_error(value: str) -> str | None:
    # Istio parses "a/b" as a prefix (netip.ParsePrefix) and anything else as a single address.
    addr, slash, bits = value.partition("/")
    try:
        ok = bool(ipaddress.ip_address(addr)) and (not slash or bool(_PORT.match(bits)))
        ok = ok and bool(ipaddress.ip_network(value, strict=False))
    except ValueError:
        ok = False
    return None if ok else "must be an IP address or a CIDR block (e.g. 203.0.113.4 or 203.0.113.0/24)"


def _port_error(value: str) -> str | None:
    if not _PORT.match(value) or not 1 <= int(value) <= 65535:
        return "must be a port number between 1 and 65535"
    return None


def _service_account_error(value: str) -> str | None:
    # CheckServiceAccount: `name` or `namespace/name`, no wildcards, at most 320 characters.
    ns, slash, sa = value.partition("/")
    if "*" in value:
        return "wildcard not allowed"
    if len(value) > 320:
        return "must be no more than 320 characters"
    if "/" in sa or (slash and not ns) or not (sa if slash else ns):
        return "must have the form 'serviceAccount' or 'namespace/serviceAccount'"
    return None


def _path_error(value: str) -> str | None:
    # CheckValidPathTemplate: `{*}` matches one segment, `{**}` any number and must come last;
    # other braces are refused, and around templates every segment must be a valid literal.
    templated = "{*}" in value or "{**}" in value
    seen_any = False
    for glob in value.strip("/").split("/"):
        if glob in ("{*}", "{**}"):
            if seen_any:
                return "{**} must be the last operator in a path template"
            seen_any = glob == "{**}"
            continue
        if "{" in glob or "}" in glob:
            return "contains '{' or '}' beyond a supported path template"
        if templated and not _PATH_LITERAL.match(glob):
            return f"segment '{glob}' is not a valid path literal"
    return None


def _list_causes(path: str, values: list[str] | None, check: Check | None = None) -> list[Cause]:
    """Istio refuses empty strings in every match list (CheckEmptyValues), then checks each value."""
    causes = []
    for i, value in enumerate(values or []):
        problem = "must not be empty" if value == "" else check(value) if check else None
        if problem:
            causes.append(invalid(f"{path}[{i}]", value, problem))
    return causes


# --- AuthorizationPolicy -------------------------------------------------------------------------


class Source(Model):
    """Where a request comes from; the fields are ANDed, the values within a field ORed."""

    principals: list[str] | None = None
    not_principals: list[str] | None = None
    request_principals: list[str] | None = None
    not_request_principals: list[str] | None = None
    namespaces: list[str] | None = None
    not_namespaces: list[str] | None = None
    service_accounts: list[str] | None = Field(default=None, max_length=16)
    not_service_accounts: list[str] | None = Field(default=None, max_length=16)
    ip_blocks: list[str] | None = None
    not_ip_blocks: list[str] | None = None
    remote_ip_blocks: list[str] | None = None
    not_remote_ip_blocks: list[str] | None = None


class Operation(Model):
    """What a request does. Ports are strings in Istio's API; hosts, methods, paths are HTTP-only."""

    hosts: list[str] | None = None
    not_hosts: list[str] | None = None
    ports: list[str] | None = None
    not_ports: list[str] | None = None
    methods: list[str] | None = None
    not_methods: list[str] | None = None
    paths: list[str] | None = None
    not_paths: list[str] | None = None


class RuleFrom(Model):
    """One entry of `rule.from`."""

    source: Source | None = None


class RuleTo(Model):
    """One entry of `rule.to`."""

    operation: Operation | None = None


class RuleCondition(Model):
    """One entry of `rule.when`: an Istio attribute and the values it must (not) have."""

    key: str
    values: list[str] | None = None
    not_values: list[str] | None = None


class Rule(Model):
    """A rule matches when one source, one operation and every condition match."""

    from_: list[RuleFrom] | None = Field(default=None, alias="from", max_length=512)
    to: list[RuleTo] | None = None
    when: list[RuleCondition] | None = None


class ExtensionProvider(Model):
    """The MeshConfig extension provider that decides a CUSTOM policy."""

    name: str | None = None


class AuthorizationPolicySpec(Model):
    """istio.security.v1beta1.AuthorizationPolicy."""

    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: list[PolicyTargetReference] | None = Field(default=None, max_length=16)
    rules: list[Rule] | None = Field(default=None, max_length=512)
    action: Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"] | None = None
    provider: ExtensionProvider | None = None


class AuthorizationPolicy(KubeObject):
    """An AuthorizationPolicy object."""

    spec: AuthorizationPolicySpec | None = None
    status: IstioStatus | None = None


_SOURCE_CHECKS: dict[str, Check] = dict.fromkeys(
    ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"), _ip_error
) | dict.fromkeys(("serviceAccounts", "notServiceAccounts"), _service_account_error)
_OPERATION_CHECKS: dict[str, Check] = {"ports": _port_error, "notPorts": _port_error}
_OPERATION_CHECKS |= {"paths": _path_error, "notPaths": _path_error}
# Istio's ext_authz integration cannot see peer or JWT identities (TODO in ValidateAuthorizationPolicy).
_CUSTOM_UNSUPPORTED_SOURCE = (
    "principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals",
    "namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts",
)  # fmt: skip
_CUSTOM_UNSUPPORTED_KEYS = ("source.namespace", "source.serviceAccount", "source.principal")

# `when` keys (pkg/config/security: ValidateAttribute). Map keys need the form `name[entry]`.
_EXACT_KEYS: dict[str, Check | None] = {
    **dict.fromkeys(("source.ip", "remote.ip", "destination.ip"), _ip_error),
    "destination.port": _port_error,
    "source.serviceAccount": _service_account_error,
    **dict.fromkeys(("source.namespace", "source.principal", "connection.sni"), None),
    **dict.fromkeys(("request.auth.principal", "request.auth.audiences", "request.auth.presenter"), None),
}
_MAP_KEY_PREFIXES = ("request.headers", "request.experimental.inline.headers", "request.auth.claims")
_MAP_KEY_PREFIXES += ("experimental.envoy.filters.",)
# Retired v1alpha1 attributes, now expressed by metadata.namespace and the selector.
_RETIRED_KEYS = ("destination.namespace", "destination.name", "destination.user", "destination.labels")


def _fields(model: Model) -> dict[str, Any]:
    """A model's values keyed by their wire names."""
    return {field.alias or name: getattr(model, name) for name, field in type(model).model_fields.items()}


def _source_causes(entry: RuleFrom, path: str, custom: bool) -> list[Cause]:
    if entry.source is None:
        return [_required(f"{path}.source", "each `from` entry needs a source")]
    path += ".source"
    lists = _fields(entry.source)
    causes: list[Cause] = []
    if not any(lists.values()):
        causes.append(invalid(path, {}, "must not be empty: set at least one field"))
    # CEL rule on Source: service accounts stand in for namespaces and principals, never beside them.
    if any(lists[k] is not None for k in ("principals", "notPrincipals", "namespaces", "notNamespaces")):
        causes += [
            forbidden(f"{path}.{name}", "cannot be set with namespaces or principals")
            for name in ("serviceAccounts", "notServiceAccounts")
            if lists[name] is not None
        ]
    for name, values in lists.items():
        causes += _list_causes(f"{path}.{name}", values, _SOURCE_CHECKS.get(name))
        if custom and values and name in _CUSTOM_UNSUPPORTED_SOURCE:
            causes.append(forbidden(f"{path}.{name}", "is not supported with action CUSTOM"))
    return causes


def _operation_causes(entry: RuleTo, path: str) -> list[Cause]:
    if entry.operation is None:
        return [_required(f"{path}.operation", "each `to` entry needs an operation")]
    path += ".operation"
    lists = _fields(entry.operation)
    causes: list[Cause] = []
    if not any(lists.values()):
        causes.append(invalid(path, {}, "must not be empty: set at least one field"))
    for name, values in lists.items():
        causes += _list_causes(f"{path}.{name}", values, _OPERATION_CHECKS.get(name))
    return causes


def _attribute(key: str) -> tuple[str | None, Check | None]:
    """(why `key` is not a usable `when` key or None, the check for its values)."""
    if key in _EXACT_KEYS:
        return None, _EXACT_KEYS[key]
    if key.startswith(_MAP_KEY_PREFIXES):
        bracket = key.find("[")
        if key.endswith("]") and 0 < bracket < len(key) - 2:
            return None, None
        return "should have the form name[key], e.g. request.headers[User-Agent]", None
    if key.startswith(_RETIRED_KEYS):
        return "attribute only supported in v1alpha1; use metadata.namespace or the selector", None
    return "unknown attribute; see https://istio.io/latest/docs/reference/config/security/conditions/", None


def _condition_causes(cond: RuleCondition, path: str, custom: bool) -> list[Cause]:
    if not cond.key:
        return [_required(f"{path}.key", "the name of an Istio attribute")]
    causes: list[Cause] = []
    problem, check = _attribute(cond.key)
    if problem:
        causes.append(invalid(f"{path}.key", cond.key, problem))
    if custom and (cond.key in _CUSTOM_UNSUPPORTED_KEYS or cond.key.startswith("request.auth.")):
        causes.append(forbidden(f"{path}.key", f"{cond.key} is not supported with action CUSTOM"))
    if not cond.values and not cond.not_values:
        causes.append(_required(f"{path}.values", "at least one of values or notValues must be set"))
    elif not problem:
        for name, values in (("values", cond.values), ("notValues", cond.not_values)):
            if check is _service_account_error and len(values or []) > 16:
                causes.append(invalid(f"{path}.{name}", len(values or []), "must have at most 16 items"))
            causes += _list_causes(f"{path}.{name}", values, check)
    return causes


def _rule_causes(rule: Rule, path: str, custom: bool) -> list[Cause]:
    """The checks of one rule: no empty `from`/`to` lists or entries, valid values and keys."""
    causes: list[Cause] = []
    for name, entries in (("from", rule.from_), ("to", rule.to)):
        if entries is not None and not entries:
            causes.append(invalid(f"{path}.{name}", [], "must not be empty; omit it to match any"))
    for i, source in enumerate(rule.from_ or []):
        causes += _source_causes(source, f"{path}.from[{i}]", custom)
    for i, operation in enumerate(rule.to or []):
        causes += _operation_causes(operation, f"{path}.to[{i}]")
    for i, cond in enumerate(rule.when or []):
        causes += _condition_causes(cond, f"{path}.when[{i}]", custom)
    return causes


def _action_causes(spec: AuthorizationPolicySpec) -> list[Cause]:
    """CUSTOM needs a provider and the provider needs CUSTOM; DENY and CUSTOM need rules."""
    action = spec.action or "ALLOW"
    causes: list[Cause] = []
    # A policy without rules never matches: harmless for ALLOW (it then denies everything, the
    # documented allow-nothing policy) and AUDIT, but Istio refuses it for DENY and CUSTOM.
    if action in ("DENY", "CUSTOM") and not spec.rules:
        why = f"{action} action without rules will never be triggered; add an empty rule {{}}"
        causes.append(_required("spec.rules", why))
    if action == "CUSTOM":
        if spec.provider is None:
            causes.append(_required("spec.provider", "action CUSTOM names the extension provider to call"))
        elif not spec.provider.name:
            causes.append(_required("spec.provider.name", "the name of a MeshConfig extension provider"))
    elif spec.provider is not None:
        causes.append(forbidden("spec.provider", f"may only be set with action CUSTOM, found {action}"))
    return causes


def _authorization_policy_check(obj: Json, model: AuthorizationPolicy) -> list[Cause]:
    """istiod's ValidateAuthorizationPolicy plus the CRD's CEL rules, with exact field paths."""
    spec = model.spec
    if spec is None:
        return []
    causes = _targeting_causes(spec) + _action_causes(spec)
    for i, rule in enumerate(spec.rules or []):
        causes += _rule_causes(rule, f"spec.rules[{i}]", spec.action == "CUSTOM")
    return causes


_ACTION = Column("Action", jsonpath(".spec.action"), description="The operation to take.")
AUTHORIZATION_POLICY = _kind(AuthorizationPolicy, _authorization_policy_check, "authorizationpolicies", "ap", _ACTION)

# --- PeerAuthentication --------------------------------------------------------------------------


class PeerMutualTLS(Model):
    """The mTLS mode; UNSET inherits from the parent scope (namespace, then mesh)."""

    mode: Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"] | None = None


class PeerAuthenticationSpec(Model):
    """istio.security.v1beta1.PeerAuthentication."""

    selector: WorkloadSelector | None = None
    mtls: PeerMutualTLS | None = None
    port_level_mtls: dict[str, PeerMutualTLS] | None = None


class PeerAuthentication(KubeObject):
    """A PeerAuthentication object."""

    spec: PeerAuthenticationSpec | None = None
    status: IstioStatus | None = None


def _peer_authentication_check(obj: Json, model: PeerAuthentication) -> list[Cause]:
    """istiod's ValidatePeerAuthentication and the CRD's CEL rules on portLevelMtls."""
    spec = model.spec
    if spec is None:
        return []
    causes = _selector_causes(spec.selector)
    ports = spec.port_level_mtls
    if ports is None:
        return causes
    if not ports:
        causes.append(invalid("spec.portLevelMtls", {}, "must have at least one port when set"))
    elif not (spec.selector and spec.selector.match_labels):
        # Port numbers are workload ports, so a mesh- or namespace-wide policy cannot name them.
        causes.append(forbidden("spec.portLevelMtls", "requires a selector with matchLabels"))
    for port in ports:
        if _port_error(port):
            causes.append(invalid(f"spec.portLevelMtls[{port}]", port, "port must be between 1-65535"))
    return causes


_MODE = Column("Mode", jsonpath(".spec.mtls.mode"), description="Defines the mTLS mode used for peer authentication.")
PEER_AUTHENTICATION = _kind(PeerAuthentication, _peer_authentication_check, "peerauthentications", "pa", _MODE)

# --- RequestAuthentication -----------------------------------------------------------------------


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
        causes.append(_required(f"{path}.issuer", "issuer must be set (or jwksUri)"))
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
    lists = _fields(rule)
    for name in ("audiences", "fromParams", "fromCookies"):
        causes += _list_causes(f"{path}.{name}", lists[name])
    for i, header in enumerate(rule.from_headers or []):
        if not header.name:
            causes.append(_required(f"{path}.fromHeaders[{i}].name", "the HTTP header carrying the token"))
    for i, item in enumerate(rule.output_claim_to_headers or []):
        where = f"{path}.outputClaimToHeaders[{i}]"
        if not item.claim:
            causes.append(_required(f"{where}.claim", "the claim to copy"))
        if not item.header:
            causes.append(_required(f"{where}.header", "the header to create"))
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
    causes = _targeting_causes(spec)
    for i, rule in enumerate(spec.jwt_rules or []):
        causes += _jwt_rule_causes(rule, f"spec.jwtRules[{i}]")
    return causes


# Istio's CRD declares no printer columns for this kind, so kubectl shows NAME and AGE.
REQUEST_AUTHENTICATION = _kind(RequestAuthentication, _request_authentication_check, "requestauthentications", "ra")

SECURITY_KINDS: tuple[ResourceKind, ...] = (AUTHORIZATION_POLICY, PEER_AUTHENTICATION, REQUEST_AUTHENTICATION)
