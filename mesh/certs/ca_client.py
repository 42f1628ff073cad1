"""A client of the CA's istio.v1.auth.IstioCertificateService (and the trust bundle), over
grpclib (mesh/grpc_client.py says why not grpcio)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2
from grpclib.client import UnaryUnaryMethod

from mesh.grpc_client import RpcError, open_channel, rpc_errors, tls_context
from mesh.proto_gen.ca.v1 import trust_pb2
from mesh.proto_gen.istio.v1.auth import ca_pb2

IMPERSONATED_IDENTITY = "ImpersonatedIdentity"
CREATE_CERTIFICATE = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
GET_TRUST_BUNDLE = "/mesh.ca.v1.TrustBundleService/GetTrustBundle"


@dataclass(frozen=True)
class CaError(Exception):
    """The CA refused, or could not be reached: the status code name and message."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class CaClient:
    """One channel to mesh-ca; TLS against the mesh's roots unless `roots_pem` is None."""

    def __init__(self, address: str, roots_pem: bytes | None, token: str, server_name: str | None = None):
        tls = tls_context(roots_pem) if roots_pem is not None else None
        self.channel = open_channel(address, tls, server_name)
        self._create = UnaryUnaryMethod(
            self.channel, CREATE_CERTIFICATE, ca_pb2.IstioCertificateRequest, ca_pb2.IstioCertificateResponse
        )
        self._trust = UnaryUnaryMethod(
            self.channel, GET_TRUST_BUNDLE, trust_pb2.TrustBundleRequest, trust_pb2.TrustBundleResponse
        )
        self.token = token

    async def __aenter__(self) -> CaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel (the certificate manager calls this when it stops)."""
        self.channel.close()

    async def create_certificate(
        self, csr_pem: str, validity_seconds: int, impersonate: str | None = None, timeout: float = 10.0
    ) -> list[str]:
        """The signed chain (leaf first, root last), or CaError."""
        metadata = struct_pb2.Struct()
        if impersonate is not None:
            metadata.update({IMPERSONATED_IDENTITY: impersonate})
        request = ca_pb2.IstioCertificateRequest(csr=csr_pem, validity_duration=validity_seconds, metadata=metadata)
        authorization = {"authorization": f"Bearer {self.token}"}
        response = await _call(self._create, request, metadata=authorization, timeout=timeout)
        return list(response.cert_chain)

    async def trust_bundle(self, timeout: float = 10.0) -> list[str]:
        response = await _call(self._trust, trust_pb2.TrustBundleRequest(), timeout=timeout)
        return list(response.roots)


async def _call(method: UnaryUnaryMethod, request: Any, **options: Any) -> Any:
    """One unary call; any failure is a CaError."""
    try:
        with rpc_errors():
            return await method(request, **options)
    except RpcError as e:
        raise CaError(e.code, e.details) from None
