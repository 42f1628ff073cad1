"""`meshctl x cert`: ask the CA for a workload certificate with a node's token, and show the answer.

A diagnostic for the node rule: what a node proxy would get for an identity, and why not.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cryptography import x509

from mesh.certs.ca_client import CaClient, CaError
from mesh.certs.csr import make_csr
from mesh.identity import Identity


def request(address: str, roots: bytes | None, token: str, identity: str, ttl: int) -> str:
    """A one-paragraph report of the CA's answer."""
    wanted = Identity.parse(identity)

    async def call() -> list[str]:
        async with CaClient(address, roots, token) as client:
            return await client.create_certificate(make_csr(wanted).csr_pem, ttl, identity)

    try:
        chain = asyncio.run(call())
    except CaError as e:
        return f"refused: {e.code} ({e.message})"
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = ", ".join(san.get_values_for_type(x509.UniformResourceIdentifier))
    return (
        f"issued: {uris}\n"
        f"  serial {leaf.serial_number:x}, valid {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} .. "
        f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, issuer {leaf.issuer.rfc4514_string() or '-'}, "
        f"chain of {len(chain)}"
    )


def roots_from(state_dir: Path) -> bytes | None:
    path = state_dir / "root-cert.pem"
    return path.read_bytes() if path.exists() else None
