"""SDS Secrets for ingress gateways (docs/ingress.md, "Data path (contract)" item 4), pure.

A Kubernetes Secret's data arrives as `SecretData` (services/xds/secrets.py fetches it from istiod;
the change stream only carries references). Two resources are made from it, under Istio's names:
- `kubernetes://{ns}/{name}`: `tls_certificate` with the chain (`tls.crt`) and key (`tls.key`) of
  a `kubernetes.io/tls` Secret;
- `kubernetes://{ns}/{name}-cacert`: `validation_context.trusted_ca`, from the Secret `{name}`
  (key `ca.crt`) or else the Secret `{name}-cacert` (key `ca.crt` or `cacert`), Istio's convention
  for the CA that client certificates must chain to.

The secret fields of `SecretData` are left out of its repr, so logging one never shows them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from mesh.resources.core.secret import TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY, TLS_TYPE, decoded_data

from .resources import sds_name

Json = dict[str, Any]

CA_CERT_KEY = "ca.crt"
ISTIO_CA_KEY = "cacert"  # the key Istio also reads in a `{name}-cacert` Secret
CACERT_SUFFIX = "-cacert"


@dataclass(frozen=True)
class SecretData:
    """What an ingress gateway may use of one Secret (decoded; never in reprs or logs)."""

    resource_version: str
    type: str = ""
    cert_chain: bytes = field(default=b"", repr=False)
    private_key: bytes = field(default=b"", repr=False)
    ca_crt: bytes = field(default=b"", repr=False)
    cacert: bytes = field(default=b"", repr=False)

    @property
    def is_tls(self) -> bool:
        """A `kubernetes.io/tls` Secret with both halves (istiod checked that they match)."""
        return self.type == TLS_TYPE and bool(self.cert_chain) and bool(self.private_key)


SecretResolver = Callable[[str, str], "SecretData | None"]  # (namespace, name) -> data, None: not (yet) known


def no_secrets(_namespace: str, _name: str) -> SecretData | None:
    """The resolver of a translator that serves no Secret (every TLS listener is left out)."""
    return None


def secret_data(obj: Json) -> SecretData:
    """The usable parts of a Secret as istiod serves it (base64 `data`); unreadable keys are left out."""
    data, _causes = decoded_data(obj)  # causes name fields only; nothing to report here
    meta = obj.get("metadata") or {}
    return SecretData(
        resource_version=str(meta.get("resourceVersion") or ""),
        type=str(obj.get("type") or "Opaque"),
        cert_chain=data.get(TLS_CERT_KEY, b""),
        private_key=data.get(TLS_PRIVATE_KEY_KEY, b""),
        ca_crt=data.get(CA_CERT_KEY, b""),
        cacert=data.get(ISTIO_CA_KEY, b""),
    )


def client_ca(own: SecretData | None, companion: SecretData | None) -> bytes | None:
    """The client CA for a Secret name: its own `ca.crt`, else the `{name}-cacert` Secret's
    `ca.crt` or `cacert`; None when neither has one."""
    if own is not None and own.ca_crt:
        return own.ca_crt
    if companion is not None:
        return companion.ca_crt or companion.cacert or None
    return None


def tls_certificate_secret(namespace: str, name: str, data: SecretData) -> secret_pb2.Secret:
    """`kubernetes://{ns}/{name}`: the certificate chain and private key, inline."""
    return secret_pb2.Secret(
        name=sds_name(namespace, name),
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=data.cert_chain),
            private_key=base_pb2.DataSource(inline_bytes=data.private_key),
        ),
    )


def validation_secret(namespace: str, name: str, ca: bytes) -> secret_pb2.Secret:
    """`kubernetes://{ns}/{name}-cacert`: the CA client certificates must chain to, inline."""
    return secret_pb2.Secret(
        name=sds_name(namespace, name + CACERT_SUFFIX),
        validation_context=common_pb2.CertificateValidationContext(trusted_ca=base_pb2.DataSource(inline_bytes=ca)),
    )
