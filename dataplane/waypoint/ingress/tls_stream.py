"""Server-side TLS over a ByteStream, through `ssl.MemoryBIO`s: the ClientHello bytes were
already read (to choose the chain, client_hello.py), so they are fed to the TLS engine first,
then the socket's. The HTTP codecs then read and write plaintext through it as through any
ByteStream.

A handshake failure sends OpenSSL's alert (e.g. `certificate required`) before the error is
raised, so clients see why they were refused.
"""

from __future__ import annotations

import contextlib
import ssl

from ..proxy.byte_stream import READ_SIZE, ByteStream, StreamClosed

MAX_HANDSHAKE_READS = 256  # a handshake needing more socket reads than this is abandoned


class TlsHandshakeError(ConnectionError):
    """The handshake failed; the message is OpenSSL's reason, never key material."""


class TlsBytes:
    """The plaintext side of one server-side TLS connection over `raw`."""

    def __init__(self, raw: ByteStream, context: ssl.SSLContext, received: bytes) -> None:
        self._raw = raw
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._incoming.write(received)

    async def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            await self._raw.write(data)

    async def _fill(self) -> bool:
        """Feed the TLS engine one socket read; False at the end of the stream."""
        data = await self._raw.read()
        if not data:
            self._incoming.write_eof()
            return False
        self._incoming.write(data)
        return True

    async def handshake(self) -> None:
        """Complete the server handshake (TlsHandshakeError, or StreamClosed when the client
        goes away)."""
        for _ in range(MAX_HANDSHAKE_READS):
            try:
                self.ssl.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    raise StreamClosed("the client closed during the TLS handshake") from None
                continue
            except ssl.SSLError as e:
                with contextlib.suppress(StreamClosed):
                    await self._flush()  # the alert
                raise TlsHandshakeError(e.reason or type(e).__name__) from None
            await self._flush()
            return
        raise TlsHandshakeError("the handshake did not complete")

    async def read(self) -> bytes:
        """Plaintext, b"" at the end of the stream (close_notify or the socket's end)."""
        while True:  # each turn returns, or consumes one socket read (which ends at the stream's end)
            try:
                data = self.ssl.read(READ_SIZE)
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    return b""
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            except ssl.SSLError as e:
                raise StreamClosed(f"TLS: {e.reason or type(e).__name__}") from None
            await self._flush()  # anything the engine answered on its own (e.g. a KeyUpdate)
            return data

    async def write(self, data: bytes) -> None:
        try:
            self.ssl.write(data)
        except ssl.SSLError as e:
            raise StreamClosed(f"TLS: {e.reason or type(e).__name__}") from None
        await self._flush()

    def close(self) -> None:
        """Close the connection (without waiting to send close_notify: the HTTP framing already
        told the client where the data ends)."""
        self._raw.close()
