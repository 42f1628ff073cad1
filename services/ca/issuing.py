"""What CreateCertificate does, independent of gRPC: authenticate, check, authorize, sign.

Every refusal is a `CaError` carrying its wire code, a short generic message for the client,
and the full reason for the log and the audit trail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from mesh.identity import Identity, IdentityError
from mesh.node_auth import NodeAuthenticator
from mesh.tokens import TokenError

from .audit import AuditLog
from .authority import AuthorityError, sign_leaf
from .csr_checks import CsrError, check_csr, clamp_validity
from .keystore import KeyStore
from .node_authorizer import NodeAuthorizer

log = logging.getLogger("mesh-ca")

IMPERSONATED_IDENTITY = "ImpersonatedIdentity"


@dataclass(frozen=True)
class ErrorKind:
    """A refusal class: the gRPC status name and the metric label."""

    grpc_code: str
    label: str
    public: str


INVALID = ErrorKind("INVALID_ARGUMENT", "invalid", "invalid certificate signing request")
UNAUTHENTICATED = ErrorKind("UNAUTHENTICATED", "unauthenticated", "authentication failed")
DENIED = ErrorKind("PERMISSION_DENIED", "denied", "not authorized for the requested identity")
INTERNAL = ErrorKind("INTERNAL", "error", "internal error")


class CaError(Exception):
    def __init__(self, kind: ErrorKind, reason: str):
        super().__init__(f"{kind.label}: {reason}")
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    default_ttl: int = 24 * 3600
    max_ttl: int = 24 * 3600
    min_ttl: int = 600


class Issuer:
    """The CA's decision procedure."""

    def __init__(
        self,
        keystore: KeyStore,
        authenticator: NodeAuthenticator,
        authorizer: NodeAuthorizer,
        audit: AuditLog,
        trust_domain: str,
        limits: Limits = Limits(),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.keystore = keystore
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.audit = audit
        self.trust_domain = trust_domain
        self.limits = limits
        self.clock = clock

    async def create_certificate(self, token: str, csr_pem: str, validity: int, impersonated: str | None) -> list[str]:
        node = ""
        identity = impersonated or ""
        try:
            try:
                claims = await self.authenticator.authenticate(token)
            except TokenError as e:
                raise CaError(UNAUTHENTICATED, f"node token refused: {e.reason}") from None
            node = claims.node
            try:
                checked = check_csr(csr_pem, self.trust_domain)
            except CsrError as e:
                raise CaError(INVALID, f"csr {e.reason}: {e.detail}") from None
            identity = str(checked.identity)
            if impersonated is not None:
                try:
                    wanted = Identity.parse(impersonated)
                except IdentityError as e:
                    raise CaError(INVALID, f"ImpersonatedIdentity is not a SPIFFE id: {e}") from None
                if wanted != checked.identity:
                    raise CaError(INVALID, f"ImpersonatedIdentity {impersonated} differs from the CSR's {identity}")
            decision = await self.authorizer.authorize(node, checked.identity)
            if not decision.allowed:
                raise CaError(DENIED, decision.reason)
            ttl = clamp_validity(
                validity, default=self.limits.default_ttl, maximum=self.limits.max_ttl, minimum=self.limits.min_ttl
            )
            try:
                leaf, chain = sign_leaf(self.keystore.signing(self.clock()), checked, ttl, self.clock())
            except AuthorityError as e:  # e.g. the signing certificate expired: an operator problem
                raise CaError(INTERNAL, f"signing failed: {e}") from None
        except CaError as e:
            self.audit.record(decision=e.kind.label, reason=e.reason, node=node, identity=identity)
            log.info(
                "certificate refused",
                extra={"node": node, "identity": identity, "result": e.kind.label, "reason": e.reason},
            )
            raise
        serial = format(leaf.serial_number, "x")
        self.audit.record(
            decision="issued", reason=decision.reason, node=node, identity=identity, ttl=ttl, serial=serial
        )
        log.debug("certificate issued", extra={"node": node, "identity": identity, "ttl": ttl, "serial": serial})
        return chain
