"""What the security.istio.io kinds share: the workload selector, policy target references,
the "at most one of selector, targetRef, targetRefs" rule, and the value checks of Istio's
pkg/config/security (addresses, ports, service accounts, path templates) that rules and
conditions apply to their match lists.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from pydantic import Field

from ..base import Cause, Model, forbidden, invalid
from ..kind import Column, ResourceKind, age, jsonpath
from ..meta import KubeObject

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


def required_because(path: str, why: str) -> Cause:
    """apimachinery's field.Required with a detail: "Required value: <why>"."""
    return Cause(path, "FieldValueRequired", f"Required value: {why}")


def selector_causes(selector: WorkloadSelector | None) -> list[Cause]:
    """Problems with `spec.selector.matchLabels`."""
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


def targeting_causes(spec: Any) -> list[Cause]:
    """Selector, targetRef and targetRefs: at most one may be set, and each must be well formed."""
    # The CRD's CEL rule counts presence (`has()`), so even an empty list takes the slot.
    slots = {"selector": spec.selector, "targetRef": spec.target_ref, "targetRefs": spec.target_refs}
    present = [name for name, value in slots.items() if value is not None]
    why = "only one of selector, targetRef or targetRefs may be set"
    causes = [forbidden(f"spec.{name}", f"{why} (found {present[0]})") for name in present[1:]]
    causes += selector_causes(spec.selector)
    if spec.target_ref is not None:
        causes += _target_ref_causes(spec.target_ref, "spec.targetRef")
    for i, ref in enumerate(spec.target_refs or []):
        causes += _target_ref_causes(ref, f"spec.targetRefs[{i}]")
    return causes


def security_kind(model: type[KubeObject], check: Any, plural: str, short: str, *cols: Column) -> ResourceKind:
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


def ip_error(value: str) -> str | None:
    """Why `value` is not an address or a CIDR block (None when it is)."""
    # Istio parses "a/b" as a prefix (netip.ParsePrefix) and anything else as a single address.
    addr, slash, bits = value.partition("/")
    try:
        ok = bool(ipaddress.ip_address(addr)) and (not slash or bool(_PORT.match(bits)))
        ok = ok and bool(ipaddress.ip_network(value, strict=False))
    except ValueError:
        ok = False
    return None if ok else "must be an IP address or a CIDR block (e.g. 203.0.113.4 or 203.0.113.0/24)"


def port_error(value: str) -> str | None:
    """Why `value` (a string, as Istio's API has ports) is not a port number 1-65535."""
    if not _PORT.match(value) or not 1 <= int(value) <= 65535:
        return "must be a port number between 1 and 65535"
    return None


def service_account_error(value: str) -> str | None:
    """Why `value` is not `serviceAccount` or `namespace/serviceAccount`."""
    # CheckServiceAccount: `name` or `namespace/name`, no wildcards, at most 320 characters.
    ns, slash, sa = value.partition("/")
    if "*" in value:
        return "wildcard not allowed"
    if len(value) > 320:
        return "must be no more than 320 characters"
    if "/" in sa or (slash and not ns) or not (sa if slash else ns):
        return "must have the form 'serviceAccount' or 'namespace/serviceAccount'"
    return None


def path_error(value: str) -> str | None:
    """Why `value` is not a valid path or path template (`{*}`, `{**}`)."""
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


def list_causes(path: str, values: list[str] | None, check: Check | None = None) -> list[Cause]:
    """Istio refuses empty strings in every match list (CheckEmptyValues), then checks each value."""
    causes = []
    for i, value in enumerate(values or []):
        problem = "must not be empty" if value == "" else check(value) if check else None
        if problem:
            causes.append(invalid(f"{path}[{i}]", value, problem))
    return causes


def wire_fields(model: Model) -> dict[str, Any]:
    """A model's values keyed by their wire names."""
    return {field.alias or name: getattr(model, name) for name, field in type(model).model_fields.items()}
