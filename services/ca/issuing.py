"""What CreateCertificate does, independent of gRPC: authenticate, check, authorize, sign.

Two kinds of caller: a node proxy with its node token (the node rule, node_authorizer.py) and a
pod's own process with its service-account token (its own identity while its pod lives,
pod_binding.py).

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
from mesh.tokens import ServiceAccountClaims, TokenError, is_service_account_token

from .audit import AuditLog
from .authority import AuthorityError, sign_leaf
from .csr_checks import CsrError, check_csr, clamp_validity
from .keystore import KeyStore
from .node_authorizer import Decision, NodeAuthorizer
from .pod_binding import PodBindingAuthorizer, token_identity

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


@dataclass
class Caller:
    """Who asks: a node (node token) or a pod's workload (service-account token). Filled in as
    the request is judged, for the audit trail."""

    node: str = ""
    workload: ServiceAccountClaims | None = None

    def audit_fields(self) -> dict[str, str]:
        if self.workload is None:
            return {"node": self.node}
        w = self.workload
        return {"node": "", "caller": w.subject, "pod": f"{w.namespace}/{w.pod_name}", "pod_uid": w.pod_uid}


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
        pod_binding: PodBindingAuthorizer | None = None,
    ):
        self.keystore = keystore
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.pod_binding = pod_binding
        self.audit = audit
        self.trust_domain = trust_domain
        self.limits = limits
        self.clock = clock

    async def _authenticate(self, token: str, caller: Caller) -> None:
        """Fill `caller` from a node token or (when enabled) a service-account token."""
        if self.pod_binding is not None and is_service_account_token(token):
            try:
                caller.workload = await self.authenticator.authenticate_service_account(token)
            except TokenError as e:
                raise CaError(UNAUTHENTICATED, f"service-account token refused: {e}") from None
            return
        try:
            caller.node = (await self.authenticator.authenticate(token)).node
        except TokenError as e:
            raise CaError(UNAUTHENTICATED, f"node token refused: {e.reason}") from None

    def _only_own_identity(
        self, workload: ServiceAccountClaims, csr_identity: Identity, impersonated: str | None
    ) -> None:
        """A service-account token gets its own identity only: no other SAN, no impersonation."""
        own = token_identity(workload, self.trust_domain)
        if impersonated is not None and impersonated != str(own):
            raise CaError(DENIED, f"the service-account token of {workload.subject} may not impersonate {impersonated}")
        if csr_identity != own:
            raise CaError(
                DENIED, f"the service-account token of {workload.subject} may get only {own}, not {csr_identity}"
            )

    async def _authorize(self, caller: Caller, identity: Identity) -> Decision:
        if caller.workload is None:
            return await self.authorizer.authorize(caller.node, identity)
        assert self.pod_binding is not None
        return await self.pod_binding.authorize(caller.workload)

    async def create_certificate(self, token: str, csr_pem: str, validity: int, impersonated: str | None) -> list[str]:
        caller = Caller()
        identity = impersonated or ""
        try:
            await self._authenticate(token, caller)
            try:
                checked = check_csr(csr_pem, self.trust_domain)
            except CsrError as e:
                raise CaError(INVALID, f"csr {e.reason}: {e.detail}") from None
            identity = str(checked.identity)
            if caller.workload is not None:
                self._only_own_identity(caller.workload, checked.identity, impersonated)
            if impersonated is not None:
                try:
                    wanted = Identity.parse(impersonated)
                except IdentityError as e:
                    raise CaError(INVALID, f"ImpersonatedIdentity is not a SPIFFE id: {e}") from None
                if wanted != checked.identity:
                    raise CaError(INVALID, f"ImpersonatedIdentity {impersonated} differs from the CSR's {identity}")
            decision = await self._authorize(caller, checked.identity)
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
            who = caller.audit_fields()
            self.audit.record(decision=e.kind.label, reason=e.reason, identity=identity, **who)
            log.info(
                "certificate refused",
                extra={**who, "identity": identity, "result": e.kind.label, "reason": e.reason},
            )
            raise
        serial = format(leaf.serial_number, "x")
        who = caller.audit_fields()
        self.audit.record(decision="issued", reason=decision.reason, identity=identity, ttl=ttl, serial=serial, **who)
        log.debug("certificate issued", extra={**who, "identity": identity, "ttl": ttl, "serial": serial})
        return chain
