"""The JWTs istiod issues, verified by istiod, the CA and xDS: node tokens and service-account tokens.

A node token is an ES256 JWT: `sub` is the node's name, `aud` lists the services that accept it
(`istiod`, `mesh-ca`, `mesh-xds`), `jti` identifies this token. The Node object records the
current token's id in the annotation `mesh.istio.io/node-token-id`, so rotating the token (a new
id) or deleting the Node revokes the old one everywhere that watches Nodes.

A service-account token (the answer to a TokenRequest) is signed with the same key: `sub` is
`system:serviceaccount:{ns}:{sa}` and the claim `kubernetes.io` names the namespace, the service
account and the pod it is bound to, as a Kubernetes projected token does. Node names are DNS
names and never contain `:`, so the two kinds cannot be mistaken for each other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWKSet

ISSUER = "istiod"
AUD_ISTIOD, AUD_CA, AUD_XDS = "istiod", "mesh-ca", "mesh-xds"
AUDIENCES = (AUD_ISTIOD, AUD_CA, AUD_XDS)
TOKEN_ID_ANNOTATION = "mesh.istio.io/node-token-id"
TOKEN_ANNOTATION = "mesh.istio.io/node-token"  # only ever in the create response, never stored
LEEWAY_SECONDS = 30
SA_SUBJECT_PREFIX = "system:serviceaccount:"
SA_CLAIM = "kubernetes.io"
AUD_ISTIO_CA = "istio-ca"  # the audience Istio's agents ask for when a token is meant for the CA


class TokenError(Exception):
    """A token was refused. `reason` is a short code for logs and metrics."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class NodeClaims:
    """What a verified node token says."""

    node: str
    token_id: str
    expires_at: int


@dataclass(frozen=True)
class ServiceAccountClaims:
    """What a verified service-account token says: whose it is and the pod it is bound to."""

    namespace: str
    service_account: str
    pod_name: str
    pod_uid: str
    token_id: str
    expires_at: int

    @property
    def subject(self) -> str:
        return service_account_subject(self.namespace, self.service_account)


def service_account_subject(namespace: str, service_account: str) -> str:
    """Kubernetes' user name for a service account."""
    return f"{SA_SUBJECT_PREFIX}{namespace}:{service_account}"


def is_service_account_token(token: str) -> bool:
    """Whether the (unverified) token claims to be a service account's; only to pick the check."""
    try:
        sub = jwt.decode(token, options={"verify_signature": False}).get("sub")
    except jwt.PyJWTError:
        return False
    return isinstance(sub, str) and sub.startswith(SA_SUBJECT_PREFIX)


def service_account_claims(
    *,
    namespace: str,
    service_account: str,
    audiences: list[str],
    pod_name: str,
    pod_uid: str,
    issued_at: int,
    expires_at: int,
    token_id: str,
    service_account_uid: str | None = None,
    node_name: str | None = None,
) -> dict[str, Any]:
    """The claims of a pod-bound service-account token (the shape of a Kubernetes projected token)."""
    sa: dict[str, str] = {"name": service_account}
    if service_account_uid:
        sa["uid"] = service_account_uid
    bound: dict[str, Any] = {"namespace": namespace, "serviceaccount": sa, "pod": {"name": pod_name, "uid": pod_uid}}
    if node_name:
        bound["node"] = {"name": node_name}
    return {
        "iss": ISSUER,
        "sub": service_account_subject(namespace, service_account),
        "aud": list(audiences),
        "iat": issued_at,
        "nbf": issued_at,
        "exp": expires_at,
        "jti": token_id,
        SA_CLAIM: bound,
    }


class NodeTokenVerifier:
    """Checks signature (against a JWKS), issuer, audience and expiry of istiod's tokens. For node
    tokens, whether the node still exists and the token is its current one is for the caller to
    check with `current_token_id`; for service-account tokens, whether the bound pod still exists.
    """

    def __init__(self, jwks: dict[str, Any]):
        self._keys = {k.key_id: k for k in PyJWKSet.from_dict(jwks).keys}

    def knows(self, token: str) -> bool:
        """Whether the token's key id is in this JWKS (else the caller may refresh the JWKS)."""
        try:
            return jwt.get_unverified_header(token).get("kid") in self._keys
        except jwt.PyJWTError:
            return True  # malformed: refreshing would not help

    def verify(self, token: str, audience: str) -> NodeClaims:
        """A node token's claims, or TokenError (a service-account token is not a node token)."""
        claims = self._decode(token, audience)
        if str(claims["sub"]).startswith(SA_SUBJECT_PREFIX):
            raise TokenError("not-a-node-token")
        return NodeClaims(node=str(claims["sub"]), token_id=str(claims["jti"]), expires_at=int(claims["exp"]))

    def verify_service_account(self, token: str, audience: str = AUD_ISTIO_CA) -> ServiceAccountClaims:
        """A pod-bound service-account token's claims, or TokenError."""
        claims = self._decode(token, audience)
        sub = str(claims["sub"])
        bound = claims.get(SA_CLAIM)
        if not sub.startswith(SA_SUBJECT_PREFIX) or not isinstance(bound, dict):
            raise TokenError("not-a-service-account-token")
        try:
            namespace = str(bound["namespace"])
            name = str(bound["serviceaccount"]["name"])
            pod = bound["pod"]
            pod_name, pod_uid = str(pod["name"]), str(pod["uid"])
        except (KeyError, TypeError):
            raise TokenError("not-pod-bound", "the token names no pod") from None
        if sub != service_account_subject(namespace, name):
            raise TokenError("invalid", "sub does not match the kubernetes.io claim")
        return ServiceAccountClaims(namespace, name, pod_name, pod_uid, str(claims["jti"]), int(claims["exp"]))

    def _decode(self, token: str, audience: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise TokenError("malformed", str(e)) from None
        if header.get("alg") != "ES256":
            raise TokenError("bad-algorithm", str(header.get("alg")))
        key = self._keys.get(header.get("kid", ""))
        if key is None:
            raise TokenError("unknown-key", str(header.get("kid")))
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["ES256"],
                audience=audience,
                issuer=ISSUER,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub", "jti", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("expired") from None
        except jwt.InvalidAudienceError:
            raise TokenError("wrong-audience") from None
        except jwt.InvalidSignatureError:
            raise TokenError("bad-signature") from None
        except jwt.PyJWTError as e:
            raise TokenError("invalid", str(e)) from None
        return claims


def current_token_id(node: dict[str, Any] | None) -> str | None:
    """The id of the token a Node object currently accepts (None: no node, no token)."""
    if node is None:
        return None
    return ((node.get("metadata") or {}).get("annotations") or {}).get(TOKEN_ID_ANNOTATION)


def check_current(claims: NodeClaims, node: dict[str, Any] | None) -> None:
    """Refuse a token whose Node is gone or that a rotation replaced."""
    if node is None:
        raise TokenError("unknown-node", claims.node)
    if current_token_id(node) != claims.token_id:
        raise TokenError("revoked", claims.node)


def now() -> int:
    return int(time.time())
