"""The server name (SNI) and ALPN offer of a TLS ClientHello, read before any handshake, as
Envoy's `tls_inspector` listener filter does: the filter chain (and so the certificate, the
client-certificate requirement and the HTTP filters) is chosen from them, and only then is TLS
terminated with that chain's context.

Pure: `parse_client_hello(bytes)` on what has arrived so far returns the hello, or None while
more bytes are needed; ClientHelloError when the bytes are not a TLS ClientHello. The wire
format is RFC 8446 §5.1 (records), §4.1.2 (ClientHello), RFC 6066 §3 (server_name) and RFC 7301
§3.1 (application_layer_protocol_negotiation).
"""

from __future__ import annotations

from dataclasses import dataclass

HANDSHAKE_RECORD = 0x16
CLIENT_HELLO = 1
SERVER_NAME_EXTENSION = 0
ALPN_EXTENSION = 16
HOST_NAME = 0
MAX_HELLO = 64 << 10  # a ClientHello larger than this is refused (they are a few hundred bytes)


class ClientHelloError(ValueError):
    """The bytes are not a TLS ClientHello (plain HTTP on a TLS port, or garbage)."""


@dataclass(frozen=True, kw_only=True)
class ClientHello:
    """What the client offered: `server_name` lower-cased without a trailing dot (None when it
    sent no SNI), `alpn` in its order of preference."""

    server_name: str | None
    alpn: tuple[str, ...]


class _Reader:
    """Bounds-checked reads over one message; running past the end is a ClientHelloError."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def take(self, n: int) -> bytes:
        if self._at + n > len(self._data):
            raise ClientHelloError("truncated ClientHello")
        out = self._data[self._at : self._at + n]
        self._at += n
        return out

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def take_all(self) -> bytes:
        return self.take(len(self._data) - self._at)

    def vector(self, length_size: int) -> _Reader:
        return _Reader(self.take(self.number(length_size)))

    @property
    def done(self) -> bool:
        return self._at >= len(self._data)


def _handshake_bytes(data: bytes) -> bytes:
    """The handshake-layer bytes of the leading handshake records (a ClientHello may span
    several records)."""
    out = bytearray()
    at = 0
    while at + 5 <= len(data):
        if data[at] != HANDSHAKE_RECORD:
            if at == 0:
                raise ClientHelloError("not a TLS handshake record")
            break
        if data[at + 1] != 3:
            raise ClientHelloError("not a TLS record version")
        length = int.from_bytes(data[at + 3 : at + 5], "big")
        if at + 5 + length > len(data):
            break
        out += data[at + 5 : at + 5 + length]
        at += 5 + length
    return bytes(out)


def _extensions(hello: _Reader) -> tuple[str | None, tuple[str, ...]]:
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    extensions = hello.vector(2) if not hello.done else _Reader(b"")
    while not extensions.done:  # each turn consumes one extension
        kind = extensions.number(2)
        body = extensions.vector(2)
        if kind == SERVER_NAME_EXTENSION:
            names = body.vector(2)
            while not names.done:
                name_type, name = names.number(1), names.vector(2).take_all()
                if name_type == HOST_NAME:
                    server_name = name.decode("ascii", errors="replace").rstrip(".").lower()
        elif kind == ALPN_EXTENSION:
            protocols = body.vector(2)
            found = []
            while not protocols.done:
                found.append(protocols.vector(1).take_all().decode("ascii", errors="replace"))
            alpn = tuple(found)
    return server_name, alpn


def parse_client_hello(data: bytes) -> ClientHello | None:
    """The ClientHello at the start of `data`, or None when more bytes are needed."""
    if data and data[0] != HANDSHAKE_RECORD:
        raise ClientHelloError("not a TLS handshake record")
    if len(data) > MAX_HELLO:
        raise ClientHelloError("ClientHello too large")
    handshake = _handshake_bytes(data)
    if len(handshake) < 4:
        return None
    if handshake[0] != CLIENT_HELLO:
        raise ClientHelloError("the first handshake message is not a ClientHello")
    length = int.from_bytes(handshake[1:4], "big")
    if len(handshake) < 4 + length:
        return None
    hello = _Reader(handshake[4 : 4 + length])
    hello.take(2 + 32)  # legacy_version, random
    hello.vector(1)  # legacy_session_id
    hello.vector(2)  # cipher_suites
    hello.vector(1)  # legacy_compression_methods
    server_name, alpn = _extensions(hello)
    return ClientHello(server_name=server_name or None, alpn=alpn)
