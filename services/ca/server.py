"""The gRPC surface of mesh-ca: istio.v1.auth.IstioCertificateService and the trust bundle.

Thin by design (STYLE): read the bearer token and the request, call the Issuer, map a CaError to
its status code with the short public message, count the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

from mesh.proto_gen.ca.v1 import trust_pb2, trust_pb2_grpc
from mesh.proto_gen.istio.v1.auth import ca_pb2, ca_pb2_grpc

from .issuing import IMPERSONATED_IDENTITY, INTERNAL, CaError, Issuer
from .metrics import CaMetrics


def bearer_token(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and value.lower().startswith("bearer "):
            return value[7:].strip()
    return ""


class CertificateServicer(ca_pb2_grpc.IstioCertificateServiceServicer):
    def __init__(self, issuer: Issuer, metrics: CaMetrics):
        self.issuer = issuer
        self.metrics = metrics

    async def CreateCertificate(
        self, request: ca_pb2.IstioCertificateRequest, context: grpc.aio.ServicerContext
    ) -> ca_pb2.IstioCertificateResponse:
        started = time.perf_counter()
        impersonated = None
        if request.HasField("metadata") and IMPERSONATED_IDENTITY in request.metadata.fields:
            value = request.metadata.fields[IMPERSONATED_IDENTITY]
            impersonated = value.string_value if value.WhichOneof("kind") == "string_value" else ""
        try:
            chain = await self.issuer.create_certificate(
                bearer_token(context), request.csr, request.validity_duration, impersonated
            )
        except CaError as e:
            self.metrics.observe(e.kind.label, time.perf_counter() - started)
            await context.abort(getattr(grpc.StatusCode, e.kind.grpc_code), e.kind.public)
        except Exception:
            self.metrics.observe(INTERNAL.label, time.perf_counter() - started)
            raise
        self.metrics.observe("issued", time.perf_counter() - started)
        return ca_pb2.IstioCertificateResponse(cert_chain=chain)


class TrustBundleServicer(trust_pb2_grpc.TrustBundleServiceServicer):
    def __init__(self, bundle: Callable[[], list[str]], trust_domain: str):
        self.bundle = bundle
        self.trust_domain = trust_domain

    async def GetTrustBundle(
        self, request: trust_pb2.TrustBundleRequest, context: grpc.aio.ServicerContext
    ) -> trust_pb2.TrustBundleResponse:
        return trust_pb2.TrustBundleResponse(roots=self.bundle(), trust_domain=self.trust_domain)


def add_services(server: grpc.aio.Server, certs: CertificateServicer, trust: TrustBundleServicer) -> None:
    ca_pb2_grpc.add_IstioCertificateServiceServicer_to_server(certs, server)
    trust_pb2_grpc.add_TrustBundleServiceServicer_to_server(trust, server)
