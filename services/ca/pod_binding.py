"""The rule for service-account tokens: a pod's own process gets its own identity, and only while
its pod lives.

A token from istiod's TokenRequest API names a namespace, a service account and the pod it is
bound to (name and uid). mesh-ca signs exactly `spiffe://{td}/ns/{ns}/sa/{sa}` of the token (no
impersonation), and only while that pod exists with that uid, is bound to a node and is not being
deleted, so deleting the pod revokes the token, as Kubernetes does for bound tokens. The pod is
read from the CA's watch-fed cache; a miss (or another uid) asks istiod before refusing, so a pod
created a moment ago is not refused while its watch event is on the way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mesh.identity import Identity
from mesh.tokens import ServiceAccountClaims

from .node_authorizer import Decision

Json = dict[str, Any]
CachedPod = Callable[[str, str], Json | None]  # (namespace, name) -> pod from the cache
FetchPod = Callable[[str, str], Awaitable[Json | None]]  # the same, asked of istiod


def token_identity(claims: ServiceAccountClaims, trust_domain: str) -> Identity:
    """The one identity a service-account token may have signed."""
    return Identity(trust_domain, claims.namespace, claims.service_account)


def binding_decision(claims: ServiceAccountClaims, pod: Json | None) -> Decision:
    """Whether the token's bound pod is still the live pod it was issued for (pure)."""
    where = f"{claims.namespace}/{claims.pod_name}"
    if pod is None:
        return Decision(False, f"the token's pod {where} no longer exists")
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    if meta.get("uid") != claims.pod_uid:
        return Decision(False, f"the token's pod {where} was deleted (a pod of that name now has another uid)")
    if meta.get("deletionTimestamp"):
        return Decision(False, f"the token's pod {where} is being deleted")
    if not spec.get("nodeName"):
        return Decision(False, f"the token's pod {where} is not bound to a node")
    sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    if sa != claims.service_account:
        return Decision(False, f"the token's pod {where} runs as service account {sa}, not {claims.service_account}")
    return Decision(True, f"token bound to live pod {where} on node {spec['nodeName']}")


class PodBindingAuthorizer:
    """Decides the rule from the pod cache, re-checking istiod when the cache disagrees."""

    def __init__(self, cached_pod: CachedPod, fetch_pod: FetchPod):
        self._cached_pod = cached_pod
        self._fetch_pod = fetch_pod

    async def authorize(self, claims: ServiceAccountClaims) -> Decision:
        decision = binding_decision(claims, self._cached_pod(claims.namespace, claims.pod_name))
        if decision.allowed:
            return decision
        fresh = binding_decision(claims, await self._fetch_pod(claims.namespace, claims.pod_name))
        if fresh.allowed:
            return Decision(True, fresh.reason + " (re-checked with istiod)")
        return fresh
