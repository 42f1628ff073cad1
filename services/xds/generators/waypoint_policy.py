"""AuthorizationPolicy with `targetRef(s)` → its `WaypointAccepted` condition.

A policy with targetRefs is enforced by waypoints, never by ztunnel: it yields no Authorization and
no `ZtunnelAccepted` condition (authorization.py), only this condition saying whether some waypoint
will enforce it. Follows istio/istio: pilot/pkg/serviceregistry/ambient/policies.go
(WaypointPolicyStatusCollection) and pilot/pkg/model/service.go (flattenConditions):

- each target is resolved in the policy's namespace (`targetRef.namespace` must be empty or that
  namespace: the CRD forbids cross-namespace references, so another namespace is `Invalid`);
- `Gateway`: bound when it is a waypoint (class `istio-waypoint`, an address in its status), else
  `TargetNotFound` (Istio's waypoint collection holds only ready waypoints);
- `GatewayClass`: the policy must be in the root namespace (else `Invalid`); bound when it is the
  waypoint class `istio-waypoint` (GatewayClasses are not served, so any other name is `Invalid`);
- `Service`, `ServiceEntry`: `TargetNotFound` when missing; bound when the object binds to a
  waypoint for service traffic (waypoints.service_waypoint: its label over its namespace's,
  `use-waypoint-namespace`, `none`, `waypoint-for`, allowedRoutes), else `AncestorNotBound`;
- one target: its own status, reason and message; several: True when any is bound, `Accepted`
  when all are, `PartiallyInvalid` (still True: those bound are enforced) when some are not, and
  `Invalid` (False) when none is;
- a CUSTOM policy is False, `UnsupportedValue`, whatever its targets: the waypoints have no
  external authorizer and do not enforce it.

Istio's reasons are kept so that tools keyed on them (istioctl analyze IST0171 reports False, and
`PartiallyInvalid` although True) read these conditions as Istio's; the messages say more than
Istio's (what is wrong with the target, and what to do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.xds.model import GATEWAYS, NAMESPACES, SERVICE_ENTRIES, SERVICES, Key

from .authorization import target_refs
from .view import ConfigView, labels_of, meta
from .waypoints import (
    MANAGED_BY,
    MESH_CONTROLLER,
    USE_WAYPOINT,
    WAYPOINT_CLASS,
    WaypointBinding,
    gateway_address,
    service_waypoint,
)

Json = dict[str, Any]

WAYPOINT_ACCEPTED = "WaypointAccepted"
# Istio's reasons (pilot/pkg/model: WaypointPolicyReason*).
ACCEPTED = "Accepted"
INVALID = "Invalid"
PARTIALLY_INVALID = "PartiallyInvalid"
ANCESTOR_NOT_BOUND = "AncestorNotBound"
TARGET_NOT_FOUND = "TargetNotFound"
UNSUPPORTED = "UnsupportedValue"  # (as ZtunnelAccepted says of an action ztunnel cannot enforce)

_SERVICE_KINDS = {"Service": SERVICES, "ServiceEntry": SERVICE_ENTRIES}
_SUPPORTED = "Gateway, GatewayClass, Service or ServiceEntry"
# What to do when a Service's own waypoint binding failed, by its istio.io/WaypointBound reason.
_BINDING_FIXES = {
    "WaypointIsNotReady": "create that waypoint, or wait until its status has an address",
    "NotAWaypoint": f"point istio.io/use-waypoint at a Gateway of class {WAYPOINT_CLASS}",
    "AttachmentDenied": "allow this namespace in the allowedRoutes of the waypoint's HBONE listener",
    "UnsupportedTrafficType": "label the waypoint istio.io/waypoint-for=service (or all)",
}


@dataclass(frozen=True)
class TargetStatus:
    """One targetRef resolved: Istio's PolicyBindingStatus (`ancestor` is `Kind.group:ns/name`)."""

    ancestor: str
    bound: bool
    reason: str
    message: str
    waypoint: str = ""  # what enforces the policy when bound: `ns/name`, or the GatewayClass name


@dataclass(frozen=True)
class WaypointPolicyStatus:
    """The condition of one targetRefs policy and the stored objects it was computed from (any
    change to one of them may change the condition)."""

    condition: dict[str, str]
    targets: tuple[TargetStatus, ...]
    reads: frozenset[Key]


def waypoint_accepted(status: bool, reason: str, message: str) -> dict[str, str]:
    """A WaypointAccepted condition (the status job adds times and generations)."""
    return {"type": WAYPOINT_ACCEPTED, "status": "True" if status else "False", "reason": reason, "message": message}


def waypoint_policy_status(view: ConfigView, ap: Json, root_namespace: str) -> WaypointPolicyStatus | None:
    """The WaypointAccepted condition of a policy with targetRefs; None for any other policy."""
    refs = target_refs(ap.get("spec") or {})
    if not refs:
        return None
    reads: set[Key] = set()
    namespace = meta(ap).get("namespace", "")
    targets = tuple(_target(view, ref or {}, namespace, root_namespace, reads) for ref in refs)
    condition = _flatten(targets)
    if (ap.get("spec") or {}).get("action") == "CUSTOM":
        # Waypoints here have no external authorizer (ext_authz): envoy/waypoint_rbac.py skips it.
        why = (
            "CUSTOM authorization (an external authorizer) is not supported by this mesh's waypoints: "
            "the policy is not enforced; express it as ALLOW or DENY rules"
        )
        condition = waypoint_accepted(False, UNSUPPORTED, why)
    return WaypointPolicyStatus(condition, targets, frozenset(reads))


def _target(view: ConfigView, ref: Json, namespace: str, root: str, reads: set[Key]) -> TargetStatus:
    kind, name = ref.get("kind") or "", ref.get("name") or ""
    ref_namespace = ref.get("namespace") or namespace
    key = f"{ref_namespace}/{name}"
    ancestor = f"{kind}.{ref.get('group') or 'core'}:{key}"
    if ref_namespace != namespace:
        why = (
            f"cross namespace referencing is not supported: {kind} {key} is not in the policy's namespace "
            f"{namespace}; remove targetRef namespace and put the policy next to its target"
        )
        return TargetStatus(ancestor, False, INVALID, why)
    if kind == "GatewayClass":
        return _gateway_class_target(ancestor, name, namespace, root)
    if kind == "Gateway":
        return _gateway_target(view, ancestor, namespace, name, reads)
    if kind in _SERVICE_KINDS:
        return _service_target(view, ancestor, kind, namespace, name, reads)
    return TargetStatus(ancestor, False, INVALID, f'targetRef kind "{kind}" is not supported: target a {_SUPPORTED}')


def _gateway_class_target(ancestor: str, name: str, namespace: str, root: str) -> TargetStatus:
    if namespace != root:
        why = f"AuthorizationPolicy must be in the root namespace `{root}` when referencing a GatewayClass"
        return TargetStatus(ancestor, False, INVALID, why)
    if name != WAYPOINT_CLASS:
        why = f'GatewayClass "{name}" is not a waypoint class: target the GatewayClass {WAYPOINT_CLASS}'
        return TargetStatus(ancestor, False, INVALID, why)
    return TargetStatus(ancestor, True, ACCEPTED, f"bound to {name}", waypoint=name)


def _gateway_target(view: ConfigView, ancestor: str, namespace: str, name: str, reads: set[Key]) -> TargetStatus:
    reads.add(Key(GATEWAYS, namespace, name))
    key = f"{namespace}/{name}"
    gateway = view.get(GATEWAYS, namespace, name)
    if gateway is None:
        why = f"Gateway {key} was not found: create the waypoint, or fix the targetRef"
        return TargetStatus(ancestor, False, TARGET_NOT_FOUND, why)
    class_name = (gateway.get("spec") or {}).get("gatewayClassName")
    if class_name != WAYPOINT_CLASS:
        why = (
            f'Gateway {key} is not a waypoint (gatewayClassName "{class_name}", not "{WAYPOINT_CLASS}"): '
            f"target a Gateway of class {WAYPOINT_CLASS}"
        )
        return TargetStatus(ancestor, False, TARGET_NOT_FOUND, why)
    if gateway_address(gateway) is None:
        why = f"waypoint {key} is not ready (no address in its status yet): wait until its deployment is ready"
        return TargetStatus(ancestor, False, TARGET_NOT_FOUND, why)
    return TargetStatus(ancestor, True, ACCEPTED, f"bound to {key}", waypoint=key)


def _service_target(
    view: ConfigView, ancestor: str, kind: str, namespace: str, name: str, reads: set[Key]
) -> TargetStatus:
    store_kind = _SERVICE_KINDS[kind]
    reads.add(Key(store_kind, namespace, name))
    key = f"{namespace}/{name}"
    obj = view.get(store_kind, namespace, name)
    if obj is None:
        why = f"{kind} {key} was not found: create it, or fix the targetRef"
        return TargetStatus(ancestor, False, TARGET_NOT_FOUND, why)
    reads.add(Key(NAMESPACES, "", namespace))  # the namespace's labels may bind it
    binding = service_waypoint(view, obj)
    if binding.waypoint is not None:
        reads.add(Key(GATEWAYS, *binding.waypoint))
    if binding.bound and binding.waypoint is not None:
        waypoint = "/".join(binding.waypoint)
        return TargetStatus(ancestor, True, ACCEPTED, f"bound to {waypoint}", waypoint=waypoint)
    why = f"{kind} {key} is not bound to a waypoint: {_unbound_fix(view, kind, obj, binding)}"
    return TargetStatus(ancestor, False, ANCESTOR_NOT_BOUND, why)


def _unbound_fix(view: ConfigView, kind: str, obj: Json, binding: WaypointBinding) -> str:
    """Why a Service or ServiceEntry has no waypoint, and what to do."""
    if binding.reason:
        return f"{binding.message}; {_BINDING_FIXES.get(binding.reason, 'fix its istio.io/use-waypoint label')}"
    own = labels_of(obj)
    if own.get(MANAGED_BY) == MESH_CONTROLLER:
        return "it is a waypoint's own Service, which never uses a waypoint; target the waypoint Gateway instead"
    namespace = meta(obj).get("namespace", "")
    ns = view.get(NAMESPACES, "", namespace)
    where = "its" if USE_WAYPOINT in own else "its namespace's"
    if own.get(USE_WAYPOINT, labels_of(ns or {}).get(USE_WAYPOINT)) == "none":
        return f"{where} label {USE_WAYPOINT}=none opts it out; bind it with the label {USE_WAYPOINT}=<waypoint>"
    return f"bind it with the label {USE_WAYPOINT}=<waypoint> (on the {kind} or its namespace)"


def _flatten(targets: tuple[TargetStatus, ...]) -> dict[str, str]:
    """One condition for all targets (Istio's flattenConditions)."""
    if len(targets) == 1:
        only = targets[0]
        return waypoint_accepted(only.bound, only.reason, only.message)
    bound = [t for t in targets if t.bound]
    invalid = [t for t in targets if not t.bound]
    invalid_text = "Invalid targetRefs: " + ", ".join(f"{t.ancestor} ({t.reason}: {t.message})" for t in invalid)
    if not bound:
        return waypoint_accepted(False, INVALID, invalid_text)
    waypoints = ", ".join(dict.fromkeys(t.waypoint for t in bound))
    if not invalid:
        return waypoint_accepted(True, ACCEPTED, f"bound to {waypoints}")
    valid_text = "valid targetRefs: " + ", ".join(f"{t.ancestor} (bound to {t.waypoint})" for t in bound)
    return waypoint_accepted(True, PARTIALLY_INVALID, f"{invalid_text}; {valid_text}")
