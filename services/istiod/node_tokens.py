"""Issuing node tokens: istiod's ES256 signing key, its JWKS, and the token of each Node.

The key lives in `{state}/node-token-key.pem` (mode 0600), made on first start. Creating a Node
returns its token once (annotation `mesh.istio.io/node-token` in the create response only);
`POST /api/v1/nodes/{name}/token` (a TokenRequest, like a ServiceAccount's) rotates it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mesh.tokens import AUDIENCES, ISSUER, TOKEN_ID_ANNOTATION, NodeTokenVerifier


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class NodeTokenSigner:
    """Signs node tokens and publishes the public key as a JWKS."""

    def __init__(self, key: ec.EllipticCurvePrivateKey):
        self._key = key
        numbers = key.public_key().public_numbers()
        self._jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64(numbers.x.to_bytes(32, "big")),
            "y": _b64(numbers.y.to_bytes(32, "big")),
        }
        # RFC 7638 thumbprint as the key id: stable for the key, different for any other.
        canonical = json.dumps(self._jwk, sort_keys=True, separators=(",", ":")).encode()
        self.kid = _b64(hashlib.sha256(canonical).digest())
        self.verifier = NodeTokenVerifier(self.jwks())

    @classmethod
    def load_or_create(cls, path: Path) -> NodeTokenSigner:
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{path} does not hold an EC private key")
            return cls(key)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return cls(key)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**self._jwk, "kid": self.kid, "use": "sig", "alg": "ES256"}]}

    def issue(self, node: str, token_id: str, ttl: timedelta) -> tuple[str, datetime]:
        """A token for `node` with id `token_id`, and when it expires."""
        issued = datetime.now(UTC).replace(microsecond=0)
        expires = issued + ttl
        claims = {
            "iss": ISSUER,
            "sub": node,
            "aud": list(AUDIENCES),
            "iat": int(issued.timestamp()),
            "nbf": int(issued.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": token_id,
        }
        return self.sign(claims), expires

    def sign(self, claims: dict[str, Any]) -> str:
        """Any istiod token (node or service account): ES256 with this key, `kid` in the header."""
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self.kid})


def new_token_id() -> str:
    return str(uuid.uuid4())


def with_token_id(body: dict[str, Any], token_id: str) -> dict[str, Any]:
    """The Node body with its current token id recorded (a copy)."""
    meta = dict(body.get("metadata") or {})
    annotations = dict(meta.get("annotations") or {})
    annotations[TOKEN_ID_ANNOTATION] = token_id
    meta["annotations"] = annotations
    return {**body, "metadata": meta}


def token_request(token: str, expires: datetime) -> dict[str, Any]:
    """The answer to `POST nodes/{name}/token`, shaped like an authentication.k8s.io TokenRequest."""
    return {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {},
        "spec": {"audiences": list(AUDIENCES)},
        "status": {"token": token, "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")},
    }
