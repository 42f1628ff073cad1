"""Serving certificates of the control plane, issued by the mesh's signing CA: mesh-ca's own, and
mesh-xds's (written to `{state}/xds-cert.pem` and `xds-key.pem` for the mesh-xds sharing the
state directory, so proxies verify both against the one trust bundle).

It names the CA by DNS and IP (localhost, this host, `--tls-san`) and by SPIFFE id
(`spiffe://{td}/ns/istio-system/sa/mesh-ca`). It is reissued when the signing CA changes (root
rotation), and handed to gRPC through dynamic credentials so new connections get the new one.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from .authority import SigningCA

SERVING_TTL = dt.timedelta(days=30)


def serving_pair(
    ca: SigningCA, trust_domain: str, extra_names: list[str], now: dt.datetime, service: str = "mesh-ca"
) -> tuple[bytes, bytes]:
    """(private key PEM, certificate chain PEM: serving cert, signing cert if not the root, chain)
    for a control-plane service named `service` (also its service account in istio-system)."""
    key = ec.generate_private_key(ec.SECP256R1())
    uri = f"spiffe://{trust_domain}/ns/istio-system/sa/{service}"
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    for name in dict.fromkeys(["localhost", "127.0.0.1", "::1", socket.gethostname(), service, *extra_names]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    not_after = min(now + SERVING_TTL, ca.cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(names), critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    chain = [cert]
    if ca.cert.subject != ca.cert.issuer:
        chain.append(ca.cert)
    chain += [c for c in ca.chain if c.subject != c.issuer]  # the root is what clients trust, not sent
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, pem


def write_pair(pair: tuple[bytes, bytes], cert_path: Path, key_path: Path) -> None:
    """Write a serving pair for a neighbour service (the key with mode 0600, both atomically)."""
    key_pem, chain_pem = pair
    for path, data, mode in ((key_path, key_pem, 0o600), (cert_path, chain_pem, 0o644)):
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        tmp.replace(path)
