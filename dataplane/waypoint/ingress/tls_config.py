"""Downstream TLS for an ingress gateway, converted at the edge: a filter chain's
`DownstreamTlsContext` (which SDS Secrets it names, whether a client certificate is required,
ALPN) and the SDS `Secret`s themselves (docs/ingress.md, "Data path (contract)", 1 and 4), and
the `ssl.SSLContext` a chain's connections are served with.

Secrets carry private keys: nothing here puts key bytes into an error, a repr or a log line. A
Secret is checked by loading it into a context (what the listener will do anyway), so what
cannot be served is NACKed, and the reason is OpenSSL's short reason (`KEY_VALUES_MISMATCH`,
`PEM lib`), never the data.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from cryptography import x509
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from google.protobuf import any_pb2, message

from mesh.hbone.tls import _pem_path  # an in-memory file: `ssl` loads keys only from paths

TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
DEFAULT_ALPN = ("h2", "http/1.1")
_UNSUPPORTED_CHECKS = (
    "verify_certificate_spki",
    "verify_certificate_hash",
    "match_typed_subject_alt_names",
    "match_subject_alt_names",
)


class TlsConfigError(ValueError):
    """A transport socket or Secret the gateway cannot serve; the message is the NACK's reason
    and never contains secret material."""


@dataclass(frozen=True)
class DownstreamTls:
    """What a filter chain's DownstreamTlsContext asks for, by Secret name."""

    certificate_secrets: tuple[str, ...]
    validation_secret: str | None = None
    require_client_certificate: bool = False
    alpn: tuple[str, ...] = DEFAULT_ALPN

    @property
    def secret_names(self) -> tuple[str, ...]:
        """Every SDS name the chain needs before it can serve."""
        extra = (self.validation_secret,) if self.validation_secret else ()
        return (*self.certificate_secrets, *extra)


@dataclass(frozen=True)
class CertificateSecret:
    """A `tls_certificate` Secret: the chain (leaf first) and its key, never shown."""

    chain_pem: bytes
    key_pem: bytes = field(repr=False)
    serial: str = ""  # the leaf's serial (hex), for config_dump and tests


@dataclass(frozen=True)
class ValidationSecret:
    """A `validation_context` Secret: the CAs client certificates must chain to."""

    ca_pem: bytes


Secret = CertificateSecret | ValidationSecret


def downstream_tls(chain: listener_components_pb2.FilterChain) -> DownstreamTls | None:
    """The chain's TLS, or None for a plaintext chain (TlsConfigError when it is not the
    contract's shape: SDS certificates, an SDS validation context)."""
    if not chain.HasField("transport_socket"):
        return None
    socket = chain.transport_socket
    if socket.name != TLS_TRANSPORT_SOCKET:
        raise TlsConfigError(f"transport socket {socket.name!r} is not supported (only {TLS_TRANSPORT_SOCKET})")
    context = tls_pb2.DownstreamTlsContext()
    if not socket.typed_config.Unpack(context):
        got = socket.typed_config.type_url
        raise TlsConfigError(f"{TLS_TRANSPORT_SOCKET}: expected a DownstreamTlsContext, got {got}")
    common = context.common_tls_context
    if common.tls_certificates:
        raise TlsConfigError("inline tls_certificates are not supported: name the certificate by SDS")
    names = tuple(c.name for c in common.tls_certificate_sds_secret_configs)
    if not names or not all(names):
        raise TlsConfigError("tls_certificate_sds_secret_configs must name at least one Secret")
    validation = common.validation_context_sds_secret_config.name or None
    require = context.require_client_certificate.value
    if require and validation is None:
        raise TlsConfigError("require_client_certificate without validation_context_sds_secret_config")
    alpn = tuple(common.alpn_protocols) or DEFAULT_ALPN
    return DownstreamTls(names, validation, require, alpn)


def _data(source: base_pb2.DataSource, what: str) -> bytes:
    kind = source.WhichOneof("specifier")
    if kind == "inline_bytes":
        return source.inline_bytes
    if kind == "inline_string":
        return source.inline_string.encode()
    raise TlsConfigError(f"{what}: only inline_bytes or inline_string are supported (got {kind or 'nothing'})")


def _load_pair(chain_pem: bytes, key_pem: bytes, ctx: ssl.SSLContext) -> None:
    with _pem_path(chain_pem) as chain_path, _pem_path(key_pem) as key_path:
        ctx.load_cert_chain(chain_path, key_path)


def _certificate(proto: secret_pb2.Secret) -> CertificateSecret:
    cert = proto.tls_certificate
    if cert.HasField("password") or cert.HasField("pkcs12"):
        raise TlsConfigError("tls_certificate: encrypted keys and PKCS#12 are not supported")
    chain_pem = _data(cert.certificate_chain, "tls_certificate.certificate_chain")
    key_pem = _data(cert.private_key, "tls_certificate.private_key")
    try:
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    except ValueError:
        raise TlsConfigError("tls_certificate.certificate_chain: not PEM certificates") from None
    try:
        _load_pair(chain_pem, key_pem, ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    except ssl.SSLError as e:
        reason = e.reason or "unreadable"
        raise TlsConfigError(f"tls_certificate: the chain and key cannot be served ({reason})") from None
    return CertificateSecret(chain_pem, key_pem, format(leaf.serial_number, "x"))


def _validation(proto: secret_pb2.Secret) -> ValidationSecret:
    context = proto.validation_context
    for name in _UNSUPPORTED_CHECKS:  # refuse rather than verify less than asked
        if getattr(context, name):
            raise TlsConfigError(f"validation_context.{name} is not supported")
    ca_pem = _data(context.trusted_ca, "validation_context.trusted_ca")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cadata=ca_pem.decode("ascii"))
    except (ssl.SSLError, ValueError, UnicodeDecodeError):
        raise TlsConfigError("validation_context.trusted_ca: not PEM CA certificates") from None
    return ValidationSecret(ca_pem)


def secret_from_proto(resource: any_pb2.Any) -> Secret:
    """An SDS Secret as the listener uses it (TlsConfigError when it cannot be served)."""
    proto = secret_pb2.Secret()
    try:
        if not resource.Unpack(proto):
            raise TlsConfigError(f"expected {secret_pb2.Secret.DESCRIPTOR.full_name}, got {resource.type_url}")
    except message.DecodeError:
        raise TlsConfigError("the Secret does not decode") from None
    kind = proto.WhichOneof("type")
    if kind == "tls_certificate":
        return _certificate(proto)
    if kind == "validation_context":
        return _validation(proto)
    raise TlsConfigError(f"Secret type {kind or 'unset'} is not supported (tls_certificate, validation_context)")


def server_context(
    tls: DownstreamTls, certificates: list[CertificateSecret], validation: ValidationSecret | None
) -> ssl.SSLContext:
    """The context one chain's connections are served with: TLS 1.2 or 1.3, the chain's
    certificates and ALPN, and the client certificate verified against `validation` (required
    when the chain says so, else asked for only when there is a validation context). No session
    tickets, so a session never outlives a Secret rotation. ssl.SSLError when it cannot be made."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_TICKET
    ctx.num_tickets = 0
    for cert in certificates:  # one per key type (RSA, ECDSA); OpenSSL picks by the client's offer
        _load_pair(cert.chain_pem, cert.key_pem, ctx)
    ctx.set_alpn_protocols(list(tls.alpn))
    if validation is not None:
        ctx.load_verify_locations(cadata=validation.ca_pem.decode("ascii"))
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
    return ctx
