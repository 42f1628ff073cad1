"""Authenticating node proxies by their node token (issued by istiod; verified by the CA and xDS).

Signature, issuer, audience (`mesh-ca`) and expiry are checked against istiod's JWKS; then the
Node must exist and the token must be its current one. Nodes come from a watch-fed cache; a miss
asks istiod, so a Node created or a token rotated a moment ago is judged on fresh data.

Service-account tokens (signed with the same key) are verified here too, signature, issuer,
audience (`istio-ca`) and expiry only: whether their bound pod still exists is the caller's check.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from mesh.tokens import (
    AUD_CA,
    AUD_ISTIO_CA,
    LEEWAY_SECONDS,
    NodeClaims,
    NodeTokenVerifier,
    ServiceAccountClaims,
    TokenError,
    check_current,
    current_token_id,
)

Json = dict[str, Any]
JWKS_REFRESH_SECONDS = 30.0
VERIFIED_CACHE_SIZE = 4096


class NodeAuthenticator:
    """Turns a bearer token into the name of the node it was issued to."""

    def __init__(
        self,
        fetch_jwks: Callable[[], Awaitable[Json]],
        cached_node: Callable[[str], Json | None],
        fetch_node: Callable[[str], Awaitable[Json | None]],
        audience: str = AUD_CA,
    ):
        self._fetch_jwks = fetch_jwks
        self._cached_node = cached_node
        self._fetch_node = fetch_node
        self._audience = audience
        self._verifier: NodeTokenVerifier | None = None
        self._fetched_at = 0.0
        # Signature checks are the costly part and their result never changes for a given token
        # and key set; expiry and revocation are still checked on every call.
        self._verified: dict[str, NodeClaims] = {}

    async def refresh_keys(self) -> None:
        self._verifier = NodeTokenVerifier(await self._fetch_jwks())
        self._fetched_at = time.monotonic()
        self._verified.clear()

    async def _current_verifier(self, token: str) -> NodeTokenVerifier:
        if self._verifier is None:
            await self.refresh_keys()
        assert self._verifier is not None
        if not self._verifier.knows(token) and time.monotonic() - self._fetched_at > JWKS_REFRESH_SECONDS:
            await self.refresh_keys()  # istiod may have a new signing key
        return self._verifier

    async def _verify(self, token: str) -> NodeClaims:
        return (await self._current_verifier(token)).verify(token, self._audience)

    async def authenticate_service_account(self, token: str) -> ServiceAccountClaims:
        """A service-account token's verified claims (audience `istio-ca`), or TokenError."""
        if not token:
            raise TokenError("missing")
        return (await self._current_verifier(token)).verify_service_account(token, AUD_ISTIO_CA)

    async def authenticate(self, token: str) -> NodeClaims:
        """The verified claims, or TokenError with the reason."""
        if not token:
            raise TokenError("missing")
        claims = self._verified.get(token)
        if claims is None or claims.expires_at + LEEWAY_SECONDS < time.time():
            claims = await self._verify(token)
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified.pop(next(iter(self._verified)))
            self._verified[token] = claims
        node = self._cached_node(claims.node)
        if node is None or current_token_id(node) != claims.token_id:
            node = await self._fetch_node(claims.node)
        check_current(claims, node)
        return claims
