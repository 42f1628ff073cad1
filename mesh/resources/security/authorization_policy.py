"""AuthorizationPolicy (security.istio.io/v1): who may do what to the selected workloads.

The check follows istiod's ValidateAuthorizationPolicy and the CRD's CEL rules, reporting each
problem at its exact field path.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..base import Cause, Model, forbidden, invalid
from ..kind import Column, jsonpath
from ..meta import IstioStatus, KubeObject
from .common import (
    Check,
    Json,
    PolicyTargetReference,
    WorkloadSelector,
    ip_error,
    list_causes,
    path_error,
    port_error,
    required_because,
    security_kind,
    service_account_error,
    targeting_causes,
    wire_fields,
)


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
    ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"), ip_error
) | dict.fromkeys(("serviceAccounts", "notServiceAccounts"), service_account_error)
_OPERATION_CHECKS: dict[str, Check] = {"ports": port_error, "notPorts": port_error}
_OPERATION_CHECKS |= {"paths": path_error, "notPaths": path_error}
# Istio's ext_authz integration cannot see peer or JWT identities (TODO in ValidateAuthorizationPolicy).
_CUSTOM_UNSUPPORTED_SOURCE = (
    "principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals",
    "namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts",
)  # fmt: skip
_CUSTOM_UNSUPPORTED_KEYS = ("source.namespace", "source.serviceAccount", "source.principal")

# `when` keys (pkg/config/security: ValidateAttribute). Map keys need the form `name[entry]`.
_EXACT_KEYS: dict[str, Check | None] = {
    **dict.fromkeys(("source.ip", "remote.ip", "destination.ip"), ip_error),
    "destination.port": port_error,
    "source.serviceAccount": service_account_error,
    **dict.fromkeys(("source.namespace", "source.principal", "connection.sni"), None),
    **dict.fromkeys(("request.auth.principal", "request.auth.audiences", "request.auth.presenter"), None),
}
_MAP_KEY_PREFIXES = ("request.headers", "request.experimental.inline.headers", "request.auth.claims")
_MAP_KEY_PREFIXES += ("experimental.envoy.filters.",)
# Retired v1alpha1 attributes, now expressed by metadata.namespace and the selector.
_RETIRED_KEYS = ("destination.namespace", "destination.name", "destination.user", "destination.labels")


def _source_causes(entry: RuleFrom, path: str, custom: bool) -> list[Cause]:
    if entry.source is None:
        return [required_because(f"{path}.source", "each `from` entry needs a source")]
    path += ".source"
    lists = wire_fields(entry.source)
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
        causes += list_causes(f"{path}.{name}", values, _SOURCE_CHECKS.get(name))
        if custom and values and name in _CUSTOM_UNSUPPORTED_SOURCE:
            causes.append(forbidden(f"{path}.{name}", "is not supported with action CUSTOM"))
    return causes


def _operation_causes(entry: RuleTo, path: str) -> list[Cause]:
    if entry.operation is None:
        return [required_because(f"{path}.operation", "each `to` entry needs an operation")]
    path += ".operation"
    lists = wire_fields(entry.operation)
    causes: list[Cause] = []
    if not any(lists.values()):
        causes.append(invalid(path, {}, "must not be empty: set at least one field"))
    for name, values in lists.items():
        causes += list_causes(f"{path}.{name}", values, _OPERATION_CHECKS.get(name))
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
        return [required_because(f"{path}.key", "the name of an Istio attribute")]
    causes: list[Cause] = []
    problem, check = _attribute(cond.key)
    if problem:
        causes.append(invalid(f"{path}.key", cond.key, problem))
    if custom and (cond.key in _CUSTOM_UNSUPPORTED_KEYS or cond.key.startswith("request.auth.")):
        causes.append(forbidden(f"{path}.key", f"{cond.key} is not supported with action CUSTOM"))
    if not cond.values and not cond.not_values:
        causes.append(required_because(f"{path}.values", "at least one of values or notValues must be set"))
    elif not problem:
        for name, values in (("values", cond.values), ("notValues", cond.not_values)):
            if check is service_account_error and len(values or []) > 16:
                causes.append(invalid(f"{path}.{name}", len(values or []), "must have at most 16 items"))
            causes += list_causes(f"{path}.{name}", values, check)
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
        causes.append(required_because("spec.rules", why))
    if action == "CUSTOM":
        if spec.provider is None:
            causes.append(required_because("spec.provider", "action CUSTOM names the extension provider to call"))
        elif not spec.provider.name:
            causes.append(required_because("spec.provider.name", "the name of a MeshConfig extension provider"))
    elif spec.provider is not None:
        causes.append(forbidden("spec.provider", f"may only be set with action CUSTOM, found {action}"))
    return causes


def _authorization_policy_check(obj: Json, model: AuthorizationPolicy) -> list[Cause]:
    """istiod's ValidateAuthorizationPolicy plus the CRD's CEL rules, with exact field paths."""
    spec = model.spec
    if spec is None:
        return []
    causes = targeting_causes(spec) + _action_causes(spec)
    for i, rule in enumerate(spec.rules or []):
        causes += _rule_causes(rule, f"spec.rules[{i}]", spec.action == "CUSTOM")
    return causes


_ACTION = Column("Action", jsonpath(".spec.action"), description="The operation to take.")
AUTHORIZATION_POLICY = security_kind(
    AuthorizationPolicy, _authorization_policy_check, "authorizationpolicies", "ap", _ACTION
)
