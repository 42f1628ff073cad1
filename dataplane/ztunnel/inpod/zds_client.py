"""ztunnel's ZDS client: connect to the node agent, say hello, serve what it hands over.

Reference §4: a SOCK_SEQPACKET unix socket, one bare protobuf per datagram (read 1024 bytes;
MSG_TRUNC or MSG_CTRUNC is an error); `ZdsHello{V1}`; the snapshot (Add with the pod's netns fd in
SCM_RIGHTS, or Keep), `SnapshotSent`, then Add and Del; every request is answered with an Ack
(empty error on success). The protocol rules are `zds_protocol.ClientConnection` (sans-IO); this
module moves datagrams and checks the received fd really is a network namespace. When the agent
goes away, ztunnel keeps serving its pods and reconnects; the next snapshot reconciles.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import socket
from pathlib import Path

from dataplane.cni.nodeagent.zds_protocol import (
    READ_SIZE,
    Add,
    ClientConnection,
    Del,
    Keep,
    ProtocolError,
    SnapshotSent,
)
from mesh import netns

from .manager import AddError, WorkloadManager

log = logging.getLogger("ztunnel.zds")
INITIAL_BACKOFF = 0.05
MAX_BACKOFF = 5.0


class AgentGone(Exception):
    """The node agent closed the connection."""


async def _wait(sock: socket.socket, writer: bool = False) -> None:
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    fd = sock.fileno()
    add, remove = (loop.add_writer, loop.remove_writer) if writer else (loop.add_reader, loop.remove_reader)
    add(fd, lambda: future.done() or future.set_result(None))
    try:
        await future
    finally:
        remove(fd)


async def receive(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One datagram and the fds that came with it (received close-on-exec; the caller owns them)."""
    while True:
        try:
            data, ancdata, flags, _ = sock.recvmsg(
                READ_SIZE, socket.CMSG_SPACE(4 * array.array("i").itemsize), socket.MSG_CMSG_CLOEXEC
            )
            break
        except BlockingIOError:
            await _wait(sock)
    fds = array.array("i")
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        raise ProtocolError("datagram or its control data truncated")
    if not data and not fds:
        raise AgentGone()
    return data, list(fds)


async def send(sock: socket.socket, data: bytes) -> None:
    while True:
        try:
            sock.send(data)
            return
        except BlockingIOError:
            await _wait(sock, writer=True)


class ZdsClient:
    """Keeps a ZDS connection to the node agent and applies its requests to the manager."""

    def __init__(self, path: Path, manager: WorkloadManager) -> None:
        self._path = path
        self._manager = manager
        self.snapshot_received = asyncio.Event()  # readiness: the first snapshot is served
        self.connected = False
        self._served = False

    async def run(self) -> None:
        """Forever: connect, serve, and reconnect with back-off when the agent goes away."""
        delay = INITIAL_BACKOFF
        while True:
            self._served = False
            try:
                await self._session()
            except (OSError, ProtocolError, AgentGone) as e:
                log.info(
                    "zds: connection ended", extra={"socket": str(self._path), "error": f"{type(e).__name__}: {e}"}
                )
            finally:
                self.connected = False
            delay = INITIAL_BACKOFF if self._served else min(delay * 2, MAX_BACKOFF)
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        with contextlib.closing(sock):
            sock.settimeout(1.0)
            sock.connect(str(self._path))  # a local unix socket: no wait worth a coroutine
            sock.setblocking(False)
            self.connected = True
            protocol = ClientConnection()
            await send(sock, protocol.hello())
            log.info("zds: connected", extra={"socket": str(self._path)})
            named: set[str] = set()
            while True:
                data, fds = await receive(sock)
                await send(sock, await self._handle(protocol, data, fds, named))
                if protocol.snapshot_done:
                    self._served = True
                    self.snapshot_received.set()

    async def _handle(self, protocol: ClientConnection, data: bytes, fds: list[int], named: set[str]) -> bytes:
        """Apply one request; the Ack (with the error, if any). A protocol error ends the session."""
        try:
            request = protocol.receive(data, len(fds))
        except ProtocolError:
            for fd in fds:
                os.close(fd)
            raise
        try:
            await self._apply(request, fds[0] if fds else None, named)
        except (AddError, OSError) as e:
            log.warning("zds: request failed", extra={"request": repr(request), "error": str(e)})
            return protocol.ack(str(e))
        return protocol.ack()

    async def _apply(self, request: object, fd: int | None, named: set[str]) -> None:
        if isinstance(request, Add):
            assert fd is not None
            if not netns.is_netns(fd):
                os.close(fd)
                raise AddError(f"AddWorkload {request.uid}: the fd is not a network namespace")
            named.add(request.uid)
            await self._manager.add(request.uid, request.info, fd)
        elif isinstance(request, Keep):
            named.add(request.uid)
        elif isinstance(request, Del):
            self._manager.delete(request.uid)
        elif isinstance(request, SnapshotSent):
            self._manager.keep_only(named)
            log.info("zds: snapshot served", extra={"pods": len(named)})
