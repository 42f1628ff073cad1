"""One bidirectional byte stream over either tunnel: an HBONE CONNECT stream or a plain TCP
connection (endpoints with tunnel `plaintext`). The HTTP codecs speak only this."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from mesh.hbone import HboneError, HboneStream

from . import http1

READ_SIZE = 1 << 16


class StreamClosed(ConnectionError):
    """The peer went away or reset the stream."""


class ByteStream(Protocol):
    async def read(self) -> bytes: ...  # b"" at end of stream

    async def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class HboneBytes:
    """An HBONE stream (either side) as a ByteStream."""

    def __init__(self, stream: HboneStream) -> None:
        self.stream = stream

    async def read(self) -> bytes:
        try:
            return await self.stream.read()
        except HboneError as e:
            raise StreamClosed(str(e)) from None

    async def write(self, data: bytes) -> None:
        try:
            await self.stream.write(data)
        except HboneError as e:
            raise StreamClosed(str(e)) from None

    def close(self) -> None:
        self.stream.close_write()


class TcpBytes:
    """An asyncio TCP connection as a ByteStream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self) -> bytes:
        try:
            return await self._reader.read(READ_SIZE)
        except OSError as e:
            raise StreamClosed(str(e)) from None

    async def write(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as e:
            raise StreamClosed(str(e)) from None

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self._writer.close()


async def next_http1_event(parser: http1.Parser, stream: ByteStream) -> http1.Event:
    """The parser's next event, reading from `stream` as long as it needs data (b"" at the end
    of the stream gives END or CLOSED, or http1.ProtocolError when a message was cut short)."""
    while True:
        event = parser.next_event()
        if event is not http1.NEED_DATA:
            return event
        parser.feed(await stream.read())
