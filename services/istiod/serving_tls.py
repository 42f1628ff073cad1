"""istiod's serving certificate, from a small local CA kept in the state directory.

Files (keys at mode 0600): `istiod-ca.pem` / `istiod-ca-key.pem` (the CA that clients trust,
copied into kubeconfigs) and `istiod-cert.pem` / `istiod-key.pem` (the serving pair). The serving
certificate is reissued at start-up when a requested name is missing or it nears expiry.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVING_DAYS = 365


@dataclass(frozen=True)
class ServingFiles:
    ca: Path
    cert: Path
    key: Path


def write_private(path: Path, data: bytes) -> None:
    """Write a secret with mode 0600 from the first byte."""
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ensure_ca(state: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = state / "istiod-ca.pem", state / "istiod-ca-key.pem"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mesh"),
            x509.NameAttribute(NameOID.COMMON_NAME, "istiod serving CA"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=1))
        .not_valid_after(_now() + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _names(extra: list[str]) -> list[x509.GeneralName]:
    wanted = [
        "localhost",
        "127.0.0.1",
        "::1",
        socket.gethostname(),
        "istiod",
        "istiod.istio-system.svc",
        *extra,
    ]
    out: list[x509.GeneralName] = []
    for name in dict.fromkeys(wanted):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _covers(cert: x509.Certificate, names: list[x509.GeneralName]) -> bool:
    try:
        have = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return False
    fresh = cert.not_valid_after_utc - _now() > dt.timedelta(days=30)
    return fresh and all(n in have for n in names)


def ensure_serving_files(state: Path, extra_names: list[str]) -> ServingFiles:
    """The CA and a serving certificate covering localhost, this host and `extra_names`."""
    ca_cert, ca_key = _ensure_ca(state)
    files = ServingFiles(state / "istiod-ca.pem", state / "istiod-cert.pem", state / "istiod-key.pem")
    names = _names(extra_names)
    if (
        files.cert.exists()
        and files.key.exists()
        and _covers(x509.load_pem_x509_certificate(files.cert.read_bytes()), names)
    ):
        return files
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "istiod")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=1))
        .not_valid_after(_now() + dt.timedelta(days=SERVING_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_private(files.key, _key_pem(key))
    files.cert.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    return files
