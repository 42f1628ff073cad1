"""HBONE's TLS contexts with real certificates, handshaking through memory BIOs (no sockets)."""

from __future__ import annotations

import ssl

import pytest

from mesh.hbone.errors import IdentityMismatch, TlsError
from mesh.hbone.tls import (
    ContextsByAddress,
    check_alpn,
    check_client_identity,
    check_server_identity,
    client_context,
    peer_identity,
    server_context,
)
from tests.unit.hbone.pki import Pki

pytestmark = pytest.mark.unit

SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"
WEB = "spiffe://cluster.local/ns/default/sa/web"


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Run a TLS handshake between two contexts in memory, then one byte each way (which also
    delivers TLS 1.3's post-handshake messages). Raises the first side's SSLError."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False, server_hostname=None)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {id(client): False, id(server): False}

    def step(obj: ssl.SSLObject) -> None:
        if not done[id(obj)]:
            try:
                obj.do_handshake()
                done[id(obj)] = True
            except ssl.SSLWantReadError:
                pass

    for _ in range(10):
        step(client)
        s_in.write(c_out.read())
        step(server)
        c_in.write(s_out.read())
        if all(done.values()):
            break
    client.write(b"c")
    s_in.write(c_out.read())
    assert server.read(1) == b"c"
    server.write(b"s")
    c_in.write(s_out.read())
    assert client.read(1) == b"s"
    return client, server


def test_mutual_tls13_with_alpn_h2_and_spiffe_identities(pki: Pki) -> None:
    seen_names: list[str | None] = []
    server_ctx = pki.server("web")
    server_ctx.sni_callback = lambda obj, name, ctx: seen_names.append(name)  # type: ignore[assignment]
    client, server = handshake(pki.client("sleep"), server_ctx)
    assert client.version() == server.version() == "TLSv1.3"
    assert client.selected_alpn_protocol() == "h2"
    check_alpn(client)
    assert client.cipher()[0] in {"TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"}
    assert peer_identity(client) == WEB and peer_identity(server) == SLEEP
    assert seen_names == [None]  # no SNI: the server picks its certificate by address
    # No resumption: the server issued no session ticket.
    assert client.session is None or not client.session.has_ticket


def test_san_check_accepts_the_expected_identity_and_refuses_another(pki: Pki) -> None:
    client, _ = handshake(pki.client("sleep"), pki.server("web"))
    assert check_server_identity(client, {WEB, "spiffe://cluster.local/ns/default/sa/waypoint"}) == WEB
    with pytest.raises(IdentityMismatch) as refused:
        check_server_identity(client, {"spiffe://cluster.local/ns/default/sa/db"})
    assert refused.value.actual == WEB
    assert refused.value.response_flag == "IDENTITY_ERROR"


def test_client_certificate_from_a_foreign_root_is_refused(pki: Pki) -> None:
    foreign = Pki()
    made = foreign.workload("sleep")
    client_ctx = client_context(made.chain_pem, made.key_pem, pki.bundle_pem)
    with pytest.raises(ssl.SSLError, match="certificate"):
        handshake(client_ctx, pki.server("web"))


def test_server_certificate_from_a_foreign_root_is_refused(pki: Pki) -> None:
    foreign = Pki()
    made = foreign.workload("web")
    with pytest.raises(ssl.SSLError, match="certificate verify failed"):
        handshake(pki.client("sleep"), server_context(made.chain_pem, made.key_pem, pki.bundle_pem))


def test_a_client_without_certificate_is_refused(pki: Pki) -> None:
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.check_hostname = False
    bare.load_verify_locations(cadata=pki.bundle_pem)
    bare.set_alpn_protocols(["h2"])
    with pytest.raises(ssl.SSLError, match="certificate"):
        handshake(bare, pki.server("web"))


def test_tls12_is_refused(pki: Pki) -> None:
    old = pki.client("sleep")
    old.minimum_version = ssl.TLSVersion.TLSv1_2
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError, match=r"(?i)version|protocol"):
        handshake(old, pki.server("web"))


def test_client_identity_must_be_a_mesh_identity_of_the_trust_domain(pki: Pki) -> None:
    other = Pki("other.example")
    made = other.workload("sleep")
    both_roots = pki.bundle_pem + other.bundle_pem
    _, server = handshake(
        client_context(made.chain_pem, made.key_pem, both_roots), pki.server("web", bundle_pem=both_roots)
    )
    assert check_client_identity(server, None) == "spiffe://other.example/ns/default/sa/sleep"
    with pytest.raises(IdentityMismatch):
        check_client_identity(server, "cluster.local")


def test_peer_identity_without_a_peer() -> None:
    assert peer_identity(None) is None
    with pytest.raises(IdentityMismatch):
        check_server_identity(None, ())


def test_unloadable_material_is_a_tls_error(pki: Pki) -> None:
    made = pki.workload("sleep")
    with pytest.raises(TlsError, match="cannot load"):
        client_context(made.chain_pem, pki.workload("web").key_pem, pki.bundle_pem)  # key of another cert


def test_contexts_by_address(pki: Pki) -> None:
    web, db = pki.server("web"), pki.server("db")
    contexts = ContextsByAddress()
    contexts.set("10.0.0.2", web)
    contexts.set("10.0.0.3", db)
    assert contexts("10.0.0.2") is web and contexts("10.0.0.3") is db
    assert contexts("10.0.0.9") is None
    contexts.remove("10.0.0.3")
    contexts.default = web
    assert contexts("10.0.0.3") is web
