"""The ZDS server: ztunnel connects over a SOCK_SEQPACKET unix socket and is handed pods.

The protocol is `zds_protocol.ServerConnection`; this module only moves its datagrams. The server
holds every enrolled pod (`uid` → workload info and an open fd on its netns, or no fd: Keep). A
connecting ztunnel gets them all as the snapshot; afterwards a new pod goes to the newest
connection and a deletion to every connection (istio/istio cni/pkg/nodeagent/ztunnelserver.go).
Each request waits for its Ack (5 s, then the connection is dropped and ztunnel reconnects).
While idle the connection is watched for EOF, so a vanished ztunnel is noticed at once.

Thread-safety: every method runs on the event loop that called `start`.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import itertools
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from .zds_protocol import (
    READ_SIZE,
    Acked,
    Add,
    Del,
    Keep,
    ProtocolError,
    ServerConnection,
    ServerState,
    WorkloadInfo,
)

log = logging.getLogger("mesh.cni.zds")
ACK_TIMEOUT = 5.0
HELLO_TIMEOUT = 5.0


class PeerGone(Exception):
    """ztunnel closed its end."""


@dataclass
class ZdsWorkload:
    """A pod as ztunnel is told about it: Add when we hold its netns fd, else Keep."""

    uid: str
    info: WorkloadInfo | None
    fd: int | None

    def request(self) -> Add | Keep:
        if self.info is not None and self.fd is not None:
            return Add(self.uid, self.info)
        return Keep(self.uid)


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    fd = sock.fileno()  # the socket may be closed by the time the finally runs
    loop.add_reader(fd, lambda: future.done() or future.set_result(None))
    try:
        await future
    finally:
        loop.remove_reader(fd)


async def recv_datagram(sock: socket.socket) -> tuple[bytes, int]:
    """One datagram and the number of fds that came with it (they are closed)."""
    while True:
        try:
            data, ancdata, flags, _ = sock.recvmsg(READ_SIZE, socket.CMSG_SPACE(4 * array.array("i").itemsize))
            break
        except BlockingIOError:
            await _readable(sock)
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        raise ProtocolError("datagram or its control data truncated")
    fds = array.array("i")
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    for fd in fds:
        os.close(fd)
    if not data and not fds:
        raise PeerGone()
    return data, len(fds)


def _same_netns(a: int, b: int) -> bool:
    return os.fstat(a).st_ino == os.fstat(b).st_ino


async def _writable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    fd = sock.fileno()
    loop.add_writer(fd, lambda: future.done() or future.set_result(None))
    try:
        await future
    finally:
        loop.remove_writer(fd)


async def send_datagram(sock: socket.socket, data: bytes, fd: int | None = None) -> None:
    """Send one datagram, with `fd` in SCM_RIGHTS when given."""
    while True:
        try:
            if fd is None:
                sock.send(data)
            else:
                socket.send_fds(sock, [data], [fd])
            return
        except BlockingIOError:
            await _writable(sock)


class _Peer:
    """One connected ztunnel: its protocol state, a wake-up for new requests, and ack waiters."""

    def __init__(self, sock: socket.socket, number: int, server: ZdsServer):
        self.sock = sock
        self.number = number
        self.machine = ServerConnection(server.snapshot)
        self.wakeup = asyncio.Event()
        self.waiters: dict[int, asyncio.Future[str]] = {}

    def queue(self, request: Add | Del) -> asyncio.Future[str]:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.machine.queue(request)
        self.waiters[id(request)] = future
        self.wakeup.set()
        return future

    def resolve(self, request: object, error: str) -> None:
        future = self.waiters.pop(id(request), None)
        if future is not None and not future.done():
            future.set_result(error)


class ZdsServer:
    """Listens on `path`; `add`, `keep` and `delete` change what ztunnel is told."""

    def __init__(self, path: Path, ack_timeout: float = ACK_TIMEOUT):
        self.path = path
        self.ack_timeout = ack_timeout
        self._workloads: dict[str, ZdsWorkload] = {}
        self._peers: list[_Peer] = []
        self._numbers = itertools.count(1)
        self._listener: socket.socket | None = None
        self._tasks: set[asyncio.Task] = set()
        self.snapshots_sent = 0

    # --- what ztunnel should hold ---------------------------------------------------------------

    def snapshot(self) -> list[Add | Keep]:
        return [w.request() for w in self._workloads.values()]

    def has(self, uid: str) -> bool:
        return uid in self._workloads

    def holds_netns(self, uid: str, netns: str) -> bool:
        """Whether `uid` was added with this very netns (compared by inode)."""
        workload = self._workloads.get(uid)
        if workload is None or workload.fd is None:
            return False
        with contextlib.suppress(OSError):
            return os.fstat(workload.fd).st_ino == os.stat(netns).st_ino
        return False

    def keep(self, uid: str) -> None:
        """Name an enrolled pod whose netns is unknown in future snapshots (as Keep)."""
        self._workloads.setdefault(uid, ZdsWorkload(uid, None, None))

    async def add(self, uid: str, info: WorkloadInfo, netns: str) -> str:
        """Hand a pod to the newest ztunnel; returns its Ack error ("" for success or no ztunnel)."""
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        old = self._workloads.get(uid)
        if old is not None and old.info == info and old.fd is not None and _same_netns(old.fd, fd):
            os.close(fd)
            return ""
        if old is not None and old.fd is not None:
            os.close(old.fd)
        self._workloads[uid] = ZdsWorkload(uid, info, fd)
        peer = self._peers[-1] if self._peers else None
        if peer is None or peer.machine.state is ServerState.AWAIT_HELLO:
            return ""  # no ztunnel yet, or its snapshot (taken at hello) will include the pod
        return await peer.queue(Add(uid, info))

    async def delete(self, uid: str) -> str:
        """Take a pod from every ztunnel; returns the first Ack error, "" when all succeeded."""
        workload = self._workloads.pop(uid, None)
        if workload is not None and workload.fd is not None:
            os.close(workload.fd)
        futures = [p.queue(Del(uid)) for p in self._peers if p.machine.state is not ServerState.AWAIT_HELLO]
        errors = [e for e in await asyncio.gather(*futures) if e]
        return errors[0] if errors else ""

    @property
    def connections(self) -> int:
        return len(self._peers)

    # --- I/O ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind (replacing a stale socket file) and start accepting ztunnels."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        listener.bind(str(self.path))
        os.chmod(self.path, 0o600)
        listener.listen(16)
        listener.setblocking(False)
        self._listener = listener
        self._spawn(self._accept_loop())
        log.info("ZDS server listening", extra={"socket": str(self.path)})

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _accept_loop(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        while True:
            sock, _ = await loop.sock_accept(self._listener)
            sock.setblocking(False)
            peer = _Peer(sock, next(self._numbers), self)
            self._peers.append(peer)
            self._spawn(self._serve(peer))

    async def _serve(self, peer: _Peer) -> None:
        log.info("ztunnel connected", extra={"connection": peer.number})
        try:
            data, nfds = await asyncio.wait_for(recv_datagram(peer.sock), HELLO_TIMEOUT)
            peer.machine.receive(data, nfds)
            while True:
                await self._step(peer)
        except PeerGone:
            log.info("ztunnel disconnected", extra={"connection": peer.number})
        except (ProtocolError, OSError, TimeoutError) as e:
            log.warning("ZDS connection dropped: %s", e or type(e).__name__, extra={"connection": peer.number})
        finally:
            for request in peer.machine.close():
                peer.resolve(request, "ztunnel connection closed")
            for future in list(peer.waiters.values()):
                if not future.done():
                    future.set_result("ztunnel connection closed")
            self._peers.remove(peer)
            peer.sock.close()

    async def _step(self, peer: _Peer) -> None:
        """Send the next request and read its Ack, or wait idle for work or EOF."""
        out = peer.machine.next_outgoing()
        if out is None:
            await self._idle(peer)
            return
        fd = self._workloads[out.fd_uid].fd if out.fd_uid in self._workloads else None
        if out.fd_uid is not None and fd is None:
            # Deleted while queued: answer locally; the Del queued behind it follows.
            peer.machine.abandon()
            peer.resolve(out.request, "pod left before it was sent")
            return
        await send_datagram(peer.sock, out.data, fd)
        data, nfds = await asyncio.wait_for(recv_datagram(peer.sock), self.ack_timeout)
        for event in peer.machine.receive(data, nfds):
            if isinstance(event, Acked):
                if event.error:
                    log.warning("ztunnel refused %s: %s", event.request, event.error)
                peer.resolve(event.request, event.error)
            else:
                self.snapshots_sent += 1
                log.info("snapshot acknowledged", extra={"connection": peer.number, "pods": len(self._workloads)})

    async def _idle(self, peer: _Peer) -> None:
        peer.wakeup.clear()
        waker = asyncio.ensure_future(peer.wakeup.wait())
        reader = asyncio.ensure_future(_readable(peer.sock))
        try:
            done, _ = await asyncio.wait({waker, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waker, reader):
                task.cancel()
            await asyncio.gather(waker, reader, return_exceptions=True)
        if reader in done:
            await recv_datagram(peer.sock)  # EOF raises PeerGone
            raise ProtocolError("ztunnel sent a message nobody asked for")

    async def close(self) -> None:
        """Stop accepting, drop every connection, release every netns fd."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        for workload in self._workloads.values():
            if workload.fd is not None:
                os.close(workload.fd)
        self._workloads.clear()
