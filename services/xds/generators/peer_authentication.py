"""PeerAuthentication → the DENY policies ztunnel enforces mTLS with.

Follows istio/istio: pilot/pkg/serviceregistry/ambient/policies.go and authorization.go
(PeerAuthDerivedPolicies, convertPeerAuthentication, convertedSelectorPeerAuthentications):
- STRICT becomes "deny peers without an identity": one static DENY
  `{root}/istio_converted_static_strict` with `not_principals: [presence]`, scope WORKLOAD_SELECTOR,
  sent whenever any PeerAuthentication exists. A workload lists it in `authorization_policies`
  when its effective mode is STRICT, whether that comes from the mesh-wide policy (root namespace,
  no selector), its namespace's, or a selector policy: that is how a namespace's PERMISSIVE
  overrides a mesh-wide STRICT, which a GLOBAL DENY could not express.
- A selector policy (outside the root namespace) with `portLevelMtls` that makes exceptions is
  converted to its own DENY `{ns}/converted_peer_authentication_{name}` and listed instead:
  STRICT overall with PERMISSIVE/DISABLE ports → deny without identity unless the port is one of
  them (`not_destination_ports`); PERMISSIVE overall with STRICT ports → deny without identity on
  those ports (one Group per port).
- UNSET inherits: workload ← namespace ← mesh; when several policies compete at one level the
  oldest wins. PERMISSIVE and DISABLE send nothing: ztunnel has no plaintext mode for meshed
  traffic, so DISABLE is accepted as PERMISSIVE, which the condition says.

One deliberate difference: Istio decides inheritance of UNSET slightly differently in its two
functions (a namespace policy whose mode is UNSET does not pass the mesh's STRICT on to port
exceptions); here one function decides the effective mode for both, so the policy a workload lists
always exists and says what that workload's mode is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mesh.proto_gen.istio.security import authorization_pb2 as authz
from services.xds.model import PEER_AUTHENTICATIONS, ROOT_NAMESPACE

from .authorization import ACCEPTED_MESSAGE, PolicyTranslation, condition
from .view import ConfigView, meta, selects

Json = dict[str, Any]

STATIC_STRICT_NAME = "istio_converted_static_strict"  # '_' is illegal in Kubernetes names: no clash
CONVERTED_PREFIX = "converted_peer_authentication_"

STRICT, PERMISSIVE, DISABLE, UNSET = "STRICT", "PERMISSIVE", "DISABLE", "UNSET"


def converted_name(name: str) -> str:
    """The Authorization name of a converted selector PeerAuthentication (GetAmbientPolicyConfigName)."""
    return CONVERTED_PREFIX + name


def _no_identity(**extra: Any) -> authz.Match:
    return authz.Match(not_principals=[authz.StringMatch(presence=authz.Empty())], **extra)


def static_strict_policy(root_namespace: str = ROOT_NAMESPACE) -> authz.Authorization:
    """The static STRICT policy: deny any connection whose peer has no identity (plaintext)."""
    return authz.Authorization(
        name=STATIC_STRICT_NAME,
        namespace=root_namespace,
        scope=authz.WORKLOAD_SELECTOR,
        action=authz.DENY,
        rules=[authz.Group(rules=[authz.Rules(matches=[_no_identity()])])],
    )


def mode(mtls: Json | None) -> str:
    """An `mtls` block's mode, UNSET when absent."""
    return ((mtls or {}).get("mode") or UNSET).upper()


def workload_level(pa: Json) -> bool:
    """Whether a policy selects workloads (a selector with labels); else it is namespace- or mesh-wide."""
    return bool(((pa.get("spec") or {}).get("selector") or {}).get("matchLabels"))


def _oldest(policies: list[Json]) -> Json | None:
    return min(policies, key=lambda p: (meta(p).get("creationTimestamp") or "", meta(p)["name"]), default=None)


def _namespace_wide(view: ConfigView, namespace: str) -> Json | None:
    return _oldest([pa for pa in view.list(PEER_AUTHENTICATIONS, namespace) if not workload_level(pa)])


def parent_strict(view: ConfigView, namespace: str, root_namespace: str = ROOT_NAMESPACE) -> bool:
    """Whether workloads of `namespace` are STRICT before any selector policy: the namespace's
    policy when its mode is set, else the mesh-wide one; PERMISSIVE when neither says."""
    levels = [namespace, root_namespace] if namespace != root_namespace else [root_namespace]
    for ns in levels:
        pa = _namespace_wide(view, ns)
        if pa is not None and mode((pa.get("spec") or {}).get("mtls")) != UNSET:
            return mode(pa["spec"]["mtls"]) == STRICT
    return False


@dataclass(frozen=True)
class _Effective:
    """A selector policy's effect: STRICT overall or not, and the ports that are exceptions."""

    strict: bool
    own_strict: bool  # STRICT by its own mode (else inherited, or not STRICT)
    exceptions: tuple[int, ...]  # ports with the other mode than `strict`


def _effective(pa: Json, parent: bool) -> _Effective:
    spec = pa.get("spec") or {}
    own = mode(spec.get("mtls"))
    strict = parent if own == UNSET else own == STRICT
    exceptions = []
    for port, mtls in sorted((spec.get("portLevelMtls") or {}).items(), key=lambda item: int(item[0])):
        port_mode = mode(mtls)
        if port_mode != UNSET and (port_mode == STRICT) != strict:
            exceptions.append(int(port))
    return _Effective(strict, own == STRICT, tuple(exceptions))


def peer_authentication(view: ConfigView, pa: Json, root_namespace: str = ROOT_NAMESPACE) -> PolicyTranslation:
    """The converted Authorization of a selector PeerAuthentication with port exceptions (None for
    every other policy: those act through the static STRICT policy), and its conditions."""
    name, namespace = meta(pa)["name"], meta(pa).get("namespace", "")
    conditions = (_condition(pa, namespace == root_namespace),)
    if namespace == root_namespace or not workload_level(pa):
        return PolicyTranslation(None, conditions)
    effect = _effective(pa, parent_strict(view, namespace, root_namespace))
    if not effect.exceptions:
        return PolicyTranslation(None, conditions)
    policy = authz.Authorization(
        name=converted_name(name), namespace=namespace, scope=authz.WORKLOAD_SELECTOR, action=authz.DENY
    )
    if effect.strict:
        # Deny without identity unless the port is an exception (the clauses are AND-ed). Istio
        # puts the identity clause first when the policy itself says STRICT, last when inherited.
        ports = [authz.Rules(matches=[authz.Match(not_destination_ports=[p])]) for p in effect.exceptions]
        strict = authz.Rules(matches=[_no_identity()])
        policy.rules.append(authz.Group(rules=[strict, *ports] if effect.own_strict else [*ports, strict]))
    else:
        # Groups are OR-ed: one per STRICT port.
        for port in effect.exceptions:
            policy.rules.append(authz.Group(rules=[authz.Rules(matches=[_no_identity(destination_ports=[port])])]))
    return PolicyTranslation(policy, conditions)


def _condition(pa: Json, in_root: bool) -> dict[str, str]:
    spec = pa.get("spec") or {}
    if in_root and workload_level(pa):
        why = f"a PeerAuthentication with a selector in the root namespace {meta(pa).get('namespace')} is ignored"
        return condition(False, "UnsupportedValue", why)
    modes = [mode(spec.get("mtls"))] + [mode(m) for m in (spec.get("portLevelMtls") or {}).values()]
    if DISABLE in modes:
        why = (
            "ztunnel does not support mTLS mode DISABLE; it is treated as PERMISSIVE: plaintext is "
            "accepted, and traffic between meshed workloads still uses mTLS (HBONE)"
        )
        return condition(True, "UnsupportedValue", why)
    return condition(True, "Accepted", ACCEPTED_MESSAGE)


def effective_policy_names(
    view: ConfigView, namespace: str, labels: dict[str, str], root_namespace: str = ROOT_NAMESPACE
) -> list[str]:
    """The PeerAuthentication-derived policies a workload lists: the static STRICT one when its
    effective mode is STRICT, or the converted policy of its selector PeerAuthentication when that
    one makes port exceptions (which then carries the STRICT part itself)."""
    parent = parent_strict(view, namespace, root_namespace)
    selected = []
    if namespace != root_namespace:
        candidates = [pa for pa in view.list(PEER_AUTHENTICATIONS, namespace) if workload_level(pa)]
        selected = [pa for pa in candidates if selects(pa["spec"]["selector"]["matchLabels"], labels)]
    pa = _oldest(selected)
    if pa is None:
        return [f"{root_namespace}/{STATIC_STRICT_NAME}"] if parent else []
    effect = _effective(pa, parent)
    if effect.exceptions:
        return [f"{namespace}/{converted_name(meta(pa)['name'])}"]
    return [f"{root_namespace}/{STATIC_STRICT_NAME}"] if effect.strict else []
