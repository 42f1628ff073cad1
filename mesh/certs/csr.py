"""Making a key and a CSR for a SPIFFE identity, as a node proxy does before calling the CA."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mesh.identity import Identity


@dataclass(frozen=True)
class KeyAndCsr:
    key_pem: bytes
    csr_pem: str


def make_csr(identity: Identity, key: ec.EllipticCurvePrivateKey | None = None) -> KeyAndCsr:
    """A P-256 key and a CSR whose only SAN is the identity's URI (empty subject, as Istio's)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(identity))]), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return KeyAndCsr(key_pem, csr.public_bytes(serialization.Encoding.PEM).decode())
