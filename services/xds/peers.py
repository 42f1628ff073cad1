"""Who is on the other end of a stream: a node's ztunnel (node token) or a workload (mTLS).

A workload is a proxyless gRPC client or a waypoint presenting its workload certificate from
mesh-ca on mesh-xds's mTLS port (`--mtls-listen`; grpcio only hands the servicer a client
certificate on a port that requires one). Both peer kinds may open state-of-the-world and delta
streams and subscribe to any type, the Envoy types included (docs/xds-grpc.md); the hub's
visibility filter decides what each sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from cryptography import x509

from mesh.identity import Identity, IdentityError
from mesh.node_auth import NodeAuthenticator
from mesh.tokens import TokenError


class Unauthenticated(Exception):
    """No acceptable credential; `reason` for the log (the client gets a generic message)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Peer:
    kind: str  # "ztunnel" (a node token) or "workload" (a workload certificate)
    node: str = ""
    identity: str = ""

    def describe(self) -> str:
        return f"ztunnel on {self.node}" if self.kind == "ztunnel" else f"workload {self.identity}"


def bearer(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and value.lower().startswith("bearer "):
            return value[7:].strip()
    return ""


def certificate_identity(context: grpc.aio.ServicerContext) -> str | None:
    """The SPIFFE id of a client certificate gRPC verified against the mesh's roots."""
    auth = context.auth_context() or {}
    pems = auth.get("x509_pem_cert") or []
    if not pems:
        return None
    cert = x509.load_pem_x509_certificate(pems[0])
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        try:
            return str(Identity.parse(uri))
        except IdentityError:
            continue
    return None


async def authenticate(context: grpc.aio.ServicerContext, nodes: NodeAuthenticator) -> Peer:
    token = bearer(context)
    if token:
        try:
            claims = await nodes.authenticate(token)
        except TokenError as e:
            raise Unauthenticated(f"node token refused: {e.reason}") from None
        return Peer("ztunnel", node=claims.node)
    identity = certificate_identity(context)
    if identity:
        return Peer("workload", identity=identity)
    raise Unauthenticated("no node token and no workload certificate")
