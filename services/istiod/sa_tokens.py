"""Service-account tokens: `POST /api/v1/namespaces/{ns}/serviceaccounts/{sa}/token`.

The Kubernetes TokenRequest subresource (authentication.k8s.io/v1). The token is an ES256 JWT
signed with the node-token key (one JWKS for every istiod token), `sub`
`system:serviceaccount:{ns}:{sa}`, and the claim `kubernetes.io` naming the bound pod. mesh-ca
signs the service account's SPIFFE identity for it while that pod exists.

Who may ask, as Kubernetes' node authorizer and NodeRestriction admission decide it: the admin
for any service account (bound or not); a node only for a pod bound to itself, named with its
uid, under that pod's own service account; nobody else. The ServiceAccount object need not
exist: pods here name their service account freely (docs/istiod.md), and a token must be
obtainable for every pod that runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from mesh.resources.core import NAMESPACE, POD, SERVICE_ACCOUNT
from mesh.tokens import AUD_ISTIO_CA, service_account_claims

from . import errors
from .auth import ADMIN, Principal
from .node_restriction import node_of
from .node_tokens import NodeTokenSigner, new_token_id
from .store.state import Index

Json = dict[str, Any]
API_VERSION = "authentication.k8s.io/v1"
DEFAULT_AUDIENCES = (AUD_ISTIO_CA,)
DEFAULT_SECONDS, MIN_SECONDS, MAX_SECONDS = 3600, 600, 86400
SPEC_FIELDS = frozenset({"audiences", "expirationSeconds", "boundObjectRef"})
REF_FIELDS = frozenset({"kind", "apiVersion", "name", "uid"})


@dataclass(frozen=True)
class TokenSpec:
    """A TokenRequest's spec with the defaults applied and the lifetime clamped."""

    audiences: tuple[str, ...]
    expiration_seconds: int
    pod_name: str | None = None
    pod_uid: str | None = None


def parse_token_request(body: Any) -> TokenSpec:
    """The request's spec, or a 400 saying what is wrong. An empty body asks for the defaults."""
    if body is None:
        return TokenSpec(DEFAULT_AUDIENCES, DEFAULT_SECONDS)
    if not isinstance(body, dict):
        raise errors.bad_request("the body of a TokenRequest must be a JSON object")
    if body.get("apiVersion", API_VERSION) != API_VERSION or body.get("kind", "TokenRequest") != "TokenRequest":
        raise errors.bad_request(f"expected kind TokenRequest, apiVersion {API_VERSION}")
    spec = body.get("spec") or {}
    if not isinstance(spec, dict):
        raise errors.bad_request("spec must be an object")
    unknown = sorted(set(spec) - SPEC_FIELDS)
    if unknown:
        raise errors.bad_request(f"unknown field(s) in the TokenRequest: spec.{', spec.'.join(unknown)}")
    audiences = spec.get("audiences") or list(DEFAULT_AUDIENCES)
    if not isinstance(audiences, list) or not all(isinstance(a, str) and a for a in audiences):
        raise errors.bad_request("spec.audiences must be a list of non-empty strings")
    seconds = spec.get("expirationSeconds")
    if seconds is None:
        seconds = DEFAULT_SECONDS
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise errors.bad_request("spec.expirationSeconds must be an integer")
    seconds = min(max(seconds, MIN_SECONDS), MAX_SECONDS)
    ref = spec.get("boundObjectRef")
    if ref is None:
        return TokenSpec(tuple(audiences), seconds)
    if not isinstance(ref, dict) or set(ref) - REF_FIELDS:
        raise errors.bad_request("spec.boundObjectRef must be an object with kind, apiVersion, name and uid")
    if ref.get("kind") != "Pod" or ref.get("apiVersion", "v1") not in ("v1", ""):
        raise errors.bad_request(
            f"cannot bind a token to a {ref.get('kind')!r} of apiVersion {ref.get('apiVersion')!r}: "
            "only kind Pod, apiVersion v1 is supported"
        )
    name, uid = ref.get("name"), ref.get("uid") or None
    if not isinstance(name, str) or not name:
        raise errors.bad_request("spec.boundObjectRef.name is required")
    if uid is not None and not isinstance(uid, str):
        raise errors.bad_request("spec.boundObjectRef.uid must be a string")
    return TokenSpec(tuple(audiences), seconds, name, uid)


def _pod_service_account(pod: Json) -> str:
    spec = pod.get("spec") or {}
    return spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"


def check_binding(principal: Principal, namespace: str, sa: str, spec: TokenSpec, pod: Json | None) -> None:
    """Whether `principal` may have this token (pure). Raises the ApiError Kubernetes would send:
    for the admin, 404 for a missing pod, 400 for another service account, 409 for another uid;
    for a node, 403 for all of them (its authorizer never reveals what it may not see)."""
    node = node_of(principal)
    if principal.role != ADMIN and node is None:
        raise errors.ApiError(
            403,
            "Forbidden",
            f'serviceaccounts "{sa}" is forbidden: User "{principal.user}" cannot create resource '
            f'"serviceaccounts/token" in API group "" in the namespace "{namespace}"',
            {"name": sa, "group": "", "kind": "serviceaccounts"},
        )
    if node is not None:
        _check_node(node, namespace, sa, spec, pod)
        return
    if spec.pod_name is None:
        return
    if pod is None:
        raise errors.not_found(POD, spec.pod_name)
    if _pod_service_account(pod) != sa:
        raise errors.bad_request(
            f'cannot bind token for serviceaccount "{sa}" to pod running with different serviceaccount name.'
        )
    if spec.pod_uid is not None and pod["metadata"].get("uid") != spec.pod_uid:
        raise errors.conflict(POD, spec.pod_name, _uid_mismatch(spec.pod_uid))


def _uid_mismatch(uid: str) -> str:
    return (
        f"the UID in the bound object reference ({uid}) does not match the UID in record. "
        "The object might have been deleted and then recreated"
    )


def _check_node(node: str, namespace: str, sa: str, spec: TokenSpec, pod: Json | None) -> None:
    def refuse(why: str) -> errors.ApiError:
        return errors.forbidden_reason(SERVICE_ACCOUNT, sa, f'node "{node}" {why}')

    if spec.pod_name is None:
        raise refuse("may only request tokens bound to a pod (spec.boundObjectRef)")
    if spec.pod_uid is None:
        raise refuse("requested a token with a pod binding without a uid")
    if pod is None or (pod.get("spec") or {}).get("nodeName") != node:
        raise refuse(f'may not request a token for pod "{namespace}/{spec.pod_name}": it is not bound to this node')
    if _pod_service_account(pod) != sa:
        raise refuse(f'may not request a token of service account "{sa}" for a pod running as another one')
    if pod["metadata"].get("uid") != spec.pod_uid:
        raise refuse(_uid_mismatch(spec.pod_uid))


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class ServiceAccountTokens:
    """Answers TokenRequests from the index (no write: a token is not stored, as in Kubernetes)."""

    def __init__(
        self, index: Index, signer: NodeTokenSigner, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ):
        self.index = index
        self.signer = signer
        self.clock = clock

    def _get(self, kind_key: str, namespace: str, name: str) -> Json | None:
        stored = self.index.get(kind_key, namespace, name)
        return stored.data if stored is not None else None

    def create(self, principal: Principal, namespace: str, sa: str, body: Any) -> Json:
        """The TokenRequest answered with `status.token`, or the ApiError that refuses it."""
        spec = parse_token_request(body)
        pod = self._get(POD.key, namespace, spec.pod_name) if spec.pod_name else None
        check_binding(principal, namespace, sa, spec, pod)
        if self._get(NAMESPACE.key, "", namespace) is None:
            raise errors.not_found(NAMESPACE, namespace)
        account = self._get(SERVICE_ACCOUNT.key, namespace, sa)
        issued = self.clock().replace(microsecond=0)
        expires = issued + timedelta(seconds=spec.expiration_seconds)
        claims = service_account_claims(
            namespace=namespace,
            service_account=sa,
            audiences=list(spec.audiences),
            pod_name=spec.pod_name or "",
            pod_uid=(pod or {}).get("metadata", {}).get("uid", ""),
            issued_at=int(issued.timestamp()),
            expires_at=int(expires.timestamp()),
            token_id=new_token_id(),
            service_account_uid=(account or {}).get("metadata", {}).get("uid"),
            node_name=(pod or {}).get("spec", {}).get("nodeName"),
        )
        if pod is None:  # not bound: no pod in the claim (mesh-ca refuses such a token)
            claims["kubernetes.io"].pop("pod")
        ref = None
        if pod is not None:
            ref = {"kind": "Pod", "apiVersion": "v1", "name": spec.pod_name, "uid": pod["metadata"].get("uid", "")}
        return {
            "kind": "TokenRequest",
            "apiVersion": API_VERSION,
            "metadata": {"name": sa, "namespace": namespace, "creationTimestamp": _rfc3339(issued)},
            "spec": {
                "audiences": list(spec.audiences),
                "expirationSeconds": spec.expiration_seconds,
                "boundObjectRef": ref,
            },
            "status": {"token": self.signer.sign(claims), "expirationTimestamp": _rfc3339(expires)},
        }
