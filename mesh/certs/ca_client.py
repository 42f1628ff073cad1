"""A client of the CA's istio.v1.auth.IstioCertificateService (and the trust bundle)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import struct_pb2

from mesh.proto_gen.ca.v1 import trust_pb2, trust_pb2_grpc
from mesh.proto_gen.istio.v1.auth import ca_pb2, ca_pb2_grpc

IMPERSONATED_IDENTITY = "ImpersonatedIdentity"


@dataclass(frozen=True)
class CaError(Exception):
    """The CA refused: its status code name and message."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class CaClient:
    """One channel to mesh-ca; TLS against the mesh's roots unless `roots_pem` is None."""

    def __init__(self, address: str, roots_pem: bytes | None, token: str, server_name: str | None = None):
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        if roots_pem is None:
            self.channel = grpc.aio.insecure_channel(address, options=options)
        else:
            self.channel = grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(roots_pem), options=options)
        self._certs = ca_pb2_grpc.IstioCertificateServiceStub(self.channel)
        self._trust = trust_pb2_grpc.TrustBundleServiceStub(self.channel)
        self.token = token

    async def __aenter__(self) -> CaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel (the certificate manager calls this when it stops)."""
        await self.channel.close()

    async def create_certificate(
        self, csr_pem: str, validity_seconds: int, impersonate: str | None = None, timeout: float = 10.0
    ) -> list[str]:
        """The signed chain (leaf first, root last), or CaError."""
        metadata = struct_pb2.Struct()
        if impersonate is not None:
            metadata.update({IMPERSONATED_IDENTITY: impersonate})
        request = ca_pb2.IstioCertificateRequest(csr=csr_pem, validity_duration=validity_seconds, metadata=metadata)
        try:
            response = await self._certs.CreateCertificate(
                request, metadata=[("authorization", f"Bearer {self.token}")], timeout=timeout
            )
        except grpc.aio.AioRpcError as e:
            raise CaError(e.code().name, e.details() or "") from None
        return list(response.cert_chain)

    async def trust_bundle(self, timeout: float = 10.0) -> list[str]:
        try:
            response = await self._trust.GetTrustBundle(trust_pb2.TrustBundleRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as e:
            raise CaError(e.code().name, e.details() or "") from None
        return list(response.roots)
