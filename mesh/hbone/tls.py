"""TLS for HBONE: mutual TLS 1.3 between SPIFFE workload identities (DESIGN §8).

The rules are ztunnel's (istio-ambient-protocols §6, "Transport"): TLS 1.3 only, ALPN `h2`, no
SNI (the server picks its certificate by destination IP, not by name), no session resumption.
Names are not checked: the client verifies the server's chain against the trust bundle and then
compares the SPIFFE URI SAN with the identities it expects for the destination; the server
requires a client certificate chained to the same bundle.

Python's `ssl` cannot restrict TLS 1.3 cipher suites; OpenSSL's default list starts with
AES_256_GCM_SHA384 and the server's preference is enforced, so the AES-GCM suites ztunnel
offers are what two of these endpoints agree on.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager

from mesh.identity import Identity, IdentityError

from .errors import IdentityMismatch, TlsError

ALPN_H2 = "h2"

# Picks the server context for a connection from its local (destination) address, or None to
# refuse it; `ContextsByAddress` is one.
ContextSelector = Callable[[str], "ssl.SSLContext | None"]


def _as_bytes(pem: str | bytes) -> bytes:
    return pem.encode("ascii") if isinstance(pem, str) else pem


@contextmanager
def _pem_path(pem: bytes) -> Iterator[str]:
    """A path holding `pem` while the context is open: `ssl` loads keys only from files.

    An anonymous memory file where Linux offers one, so the private key never touches a disk;
    otherwise a 0600 temporary file, removed at once.
    """
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("hbone-pem", os.MFD_CLOEXEC)
        try:
            os.write(fd, pem)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    import tempfile  # only here: with its shutil, bz2 and lzma it costs a node proxy 1 MB

    with tempfile.NamedTemporaryFile(suffix=".pem") as handle:
        handle.write(pem)
        handle.flush()
        yield handle.name


def load_chain(ctx: ssl.SSLContext, chain_pem: str | bytes, key_pem: str | bytes) -> None:
    """Load a certificate chain (leaf first) and its key into `ctx` from memory."""
    with _pem_path(_as_bytes(chain_pem)) as chain_path, _pem_path(_as_bytes(key_pem)) as key_path:
        ctx.load_cert_chain(chain_path, key_path)


def _base_context(
    purpose: int, chain_pem: str | bytes, key_pem: str | bytes, bundle_pem: str | bytes
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # identities are SPIFFE URIs checked after the handshake, not names
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.options |= ssl.OP_NO_TICKET | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols([ALPN_H2])
    try:
        ctx.load_verify_locations(cadata=_as_bytes(bundle_pem).decode("ascii"))
        load_chain(ctx, chain_pem, key_pem)
    except (ssl.SSLError, ValueError) as e:
        raise TlsError(f"cannot load the certificate, key or trust bundle: {e}") from None
    return ctx


def client_context(chain_pem: str | bytes, key_pem: str | bytes, trust_bundle_pem: str | bytes) -> ssl.SSLContext:
    """The context a source uses to dial HBONE: its certificate chain (leaf first) and key, and
    the trust bundle the server's chain must lead to. Pair with `check_server_identity`."""
    return _base_context(ssl.PROTOCOL_TLS_CLIENT, chain_pem, key_pem, trust_bundle_pem)


def server_context(chain_pem: str | bytes, key_pem: str | bytes, trust_bundle_pem: str | bytes) -> ssl.SSLContext:
    """The context that terminates HBONE as one identity: a client certificate chained to the
    bundle is required, and no session tickets are issued (no resumption)."""
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER, chain_pem, key_pem, trust_bundle_pem)
    ctx.num_tickets = 0  # TLS 1.3 sends tickets after the handshake unless told not to
    return ctx


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The SPIFFE URI SAN of the verified peer certificate, or None when there is no verified
    certificate or it does not carry exactly one `spiffe://` URI."""
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()  # {} unless the chain was verified (CERT_REQUIRED)
    if not cert:
        return None
    uris = [value for kind, value in cert.get("subjectAltName", ()) if kind == "URI" and value.startswith("spiffe://")]
    return uris[0] if len(uris) == 1 else None


def check_server_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, expected: Collection[str]) -> str:
    """The server's identity if it is one of `expected` (ztunnel checks the SAN against the
    destination's identities); `IdentityMismatch` otherwise. An empty `expected` accepts any
    verified SPIFFE identity."""
    actual = peer_identity(ssl_object)
    if actual is None or (expected and actual not in expected):
        raise IdentityMismatch(expected, actual)
    return actual


def check_client_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, trust_domain: str | None) -> str:
    """The client's identity, which must be a mesh workload identity and, when `trust_domain` is
    given, in it (ztunnel's server wants a client of the same root and trust domain)."""
    actual = peer_identity(ssl_object)
    try:
        identity = Identity.parse(actual or "")
    except IdentityError:
        raise IdentityMismatch((), actual) from None
    if trust_domain is not None and identity.trust_domain != trust_domain:
        raise IdentityMismatch((f"spiffe://{trust_domain}/...",), actual)
    return str(identity)


def check_alpn(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> None:
    """`TlsError` unless ALPN settled on `h2` (HBONE speaks nothing else)."""
    chosen = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
    if chosen != ALPN_H2:
        raise TlsError(f"ALPN negotiated {chosen!r}, not 'h2'")


class ContextsByAddress:
    """Server contexts chosen by the connection's local (destination) address.

    ztunnel answers as the destination workload, so it needs that workload's certificate before
    the handshake and without SNI: one context per address, replaced on certificate rotation.
    Call the object to select; an unknown address gets `default` (None refuses).
    """

    def __init__(self, default: ssl.SSLContext | None = None) -> None:
        self._by_address: dict[str, ssl.SSLContext] = {}
        self.default = default

    def set(self, address: str, context: ssl.SSLContext) -> None:
        """Answer connections to `address` with `context` from now on."""
        self._by_address[address] = context

    def remove(self, address: str) -> None:
        """Stop answering as the workload at `address`."""
        self._by_address.pop(address, None)

    def __call__(self, address: str) -> ssl.SSLContext | None:
        return self._by_address.get(address, self.default)
