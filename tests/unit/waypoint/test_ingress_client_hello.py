"""The ClientHello reader (ingress/client_hello.py) on real ClientHellos made by `ssl`."""

from __future__ import annotations

import ssl

import pytest

from dataplane.waypoint.ingress.client_hello import ClientHello, ClientHelloError, parse_client_hello


def client_hello(server_name: str | None, alpn: tuple[str, ...] = ()) -> bytes:
    """The first flight of a real TLS client."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_server_name_and_alpn() -> None:
    hello = parse_client_hello(client_hello("Web.Example.test", ("h2", "http/1.1")))
    assert hello == ClientHello(server_name="web.example.test", alpn=("h2", "http/1.1"))


def test_no_sni_no_alpn() -> None:
    assert parse_client_hello(client_hello(None)) == ClientHello(server_name=None, alpn=())


def test_every_prefix_asks_for_more() -> None:
    data = client_hello("web.example.test", ("h2",))
    assert all(parse_client_hello(data[:n]) is None for n in range(len(data)))
    assert parse_client_hello(data + b"\x17\x03\x03") is not None  # what follows is not its business


def test_a_hello_split_over_two_records() -> None:
    data = client_hello("split.example.test")
    body = data[5:]
    first, second = body[:40], body[40:]
    records = b"".join(b"\x16\x03\x01" + len(part).to_bytes(2, "big") + part for part in (first, second))
    assert parse_client_hello(records).server_name == "split.example.test"


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # plain HTTP on a TLS port
        b"\x16\x07\x01\x00\x04\x02\x00\x00\x00",  # not a TLS version
        b"\x16\x03\x01\x00\x04\x02\x00\x00\x00",  # a ServerHello first
        b"\x16\x03\x01\x00\x06\x01\x00\x00\x02\x03\x03",  # a ClientHello shorter than its fields
    ],
)
def test_not_a_client_hello(data: bytes) -> None:
    with pytest.raises(ClientHelloError):
        parse_client_hello(data)
