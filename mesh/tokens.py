"""Node tokens: the JWTs istiod issues to each Node, verified by istiod, the CA and xDS.

A node token is an ES256 JWT: `sub` is the node's name, `aud` lists the services that accept it
(`istiod`, `mesh-ca`, `mesh-xds`), `jti` identifies this token. The Node object records the
current token's id in the annotation `mesh.istio.io/node-token-id`, so rotating the token (a new
id) or deleting the Node revokes the old one everywhere that watches Nodes.
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


class NodeTokenVerifier:
    """Checks signature (against a JWKS), issuer, audience and expiry. Whether the node still
    exists and the token is its current one is for the caller to check with `current_token_id`.
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
        return NodeClaims(node=str(claims["sub"]), token_id=str(claims["jti"]), expires_at=int(claims["exp"]))


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
