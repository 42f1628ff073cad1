"""A test-only ZDS client standing in for ztunnel until the real one lands.

It connects to the node agent's ZDS socket, says hello, acknowledges every request, and for each
Add opens capture listeners inside the received netns (15001, 15006, 15008, created with
`mesh.netns.entered` around `socket()`, `SO_MARK` 0x539 and `SO_REUSEPORT` as ztunnel does). Each
accepted connection is recorded with the port it landed on and its `SO_ORIGINAL_DST`, and answered
with one line `ztunnel {port} {uid}` so the client can tell it was captured. A Del (or a snapshot
that no longer names a pod) closes that pod's listeners. Threads, not asyncio, so a test can use it
from synchronous code; `stop()` joins them all.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from dataplane.cni.nodeagent.zds_protocol import (
    READ_SIZE,
    Add,
    ClientConnection,
    Del,
    Keep,
    ProtocolError,
    SnapshotSent,
    WorkloadInfo,
)
from mesh import netns

SO_MARK = 36
SO_ORIGINAL_DST = 80
ZTUNNEL_MARK = 0x539
PORTS = (15001, 15006, 15008)


@dataclass(frozen=True)
class Captured:
    """One connection a capture listener accepted."""

    uid: str
    port: int
    peer: tuple[str, int]
    original_dst: tuple[str, int]


@dataclass
class _Pod:
    uid: str
    info: WorkloadInfo
    inode: int
    listeners: list[socket.socket] = field(default_factory=list)


def original_dst(conn: socket.socket) -> tuple[str, int]:
    """`SO_ORIGINAL_DST`: a sockaddr_in with the port in bytes 2-3 and the address in 4-7."""
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack("!H", raw[2:4])[0]
    return socket.inet_ntoa(raw[4:8]), port


class FakeZtunnel:
    """Start with `start()`; inspect `events`, `pods`, `captured`; `reconnect()`, `stop()`."""

    def __init__(self, zds_socket: Path, ports: tuple[int, ...] = PORTS):
        self.path = zds_socket
        self.ports = ports
        self.events: list[tuple[str, str]] = []  # ("hello"|"add"|"keep"|"del"|"snapshot", uid or "")
        self.pods: dict[str, _Pod] = {}
        self.captured: queue.Queue[Captured] = queue.Queue()
        self.errors: list[str] = []
        self.hellos = 0
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # --- control --------------------------------------------------------------------------------

    def start(self) -> None:
        self._spawn(self._run)

    def stop(self) -> None:
        self._stop.set()
        self.reconnect()
        with self._lock:
            for pod in list(self.pods.values()):
                self._close(pod)
            self.pods.clear()
        for thread in self._threads:
            thread.join(5)

    def reconnect(self) -> None:
        """Drop the ZDS connection (as a restarting ztunnel would); the client reconnects."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def wait_for(self, predicate, timeout: float = 5.0, what: str = "fake ztunnel condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if predicate(self):
                    return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; events={self.events[-12:]} errors={self.errors}")

    def inode(self, uid: str) -> int | None:
        with self._lock:
            pod = self.pods.get(uid)
            return pod.inode if pod else None

    # --- ZDS ------------------------------------------------------------------------------------

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._session()
            except (OSError, ProtocolError) as e:
                if not self._stop.is_set():
                    self.errors.append(str(e))
            time.sleep(0.05)

    def _session(self) -> None:
        if not self.path.exists():
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.connect(str(self.path))
            self._sock = sock
            client = ClientConnection()
            sock.send(client.hello())
            with self._lock:
                self.hellos += 1
                self.events.append(("hello", ""))
            named: set[str] = set()
            while not self._stop.is_set():
                data, fds, _flags, _ = socket.recv_fds(sock, READ_SIZE, 1, socket.MSG_CMSG_CLOEXEC)
                if not data and not fds:
                    return  # the agent went away; reconnect
                sock.send(self._handle(client, data, fds, named))

    def _handle(self, client: ClientConnection, data: bytes, fds: list[int], named: set[str]) -> bytes:
        try:
            request = client.receive(data, len(fds))
            with self._lock:
                self._apply(request, fds[0] if fds else None, named)
            return client.ack()
        except (ProtocolError, OSError) as e:
            self.errors.append(str(e))
            return client.ack(str(e))
        finally:
            for fd in fds:
                os.close(fd)

    def _apply(self, request, fd: int | None, named: set[str]) -> None:
        if isinstance(request, Add):
            assert fd is not None and netns.is_netns(fd), "Add must carry a netns fd"
            named.add(request.uid)
            self.events.append(("add", request.uid))
            self._add(request, fd)
        elif isinstance(request, Keep):
            named.add(request.uid)
            self.events.append(("keep", request.uid))
        elif isinstance(request, Del):
            self.events.append(("del", request.uid))
            pod = self.pods.pop(request.uid, None)
            if pod is not None:
                self._close(pod)
        elif isinstance(request, SnapshotSent):
            self.events.append(("snapshot", ",".join(sorted(named))))
            for uid in [u for u in self.pods if u not in named]:
                self._close(self.pods.pop(uid))

    # --- capture listeners ----------------------------------------------------------------------

    def _add(self, request: Add, fd: int) -> None:
        inode = os.fstat(fd).st_ino
        old = self.pods.get(request.uid)
        if old is not None and old.inode == inode:
            return  # already serving this netns (a snapshot after a reconnect)
        if old is not None:
            self._close(old)
        pod = _Pod(request.uid, request.info, inode)
        for port in self.ports:
            with netns.entered(fd):
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, SO_MARK, ZTUNNEL_MARK)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind(("0.0.0.0", port))
            listener.listen(64)
            listener.settimeout(0.2)
            pod.listeners.append(listener)
            self._spawn(self._accept, pod, listener, port)
        self.pods[request.uid] = pod

    def _accept(self, pod: _Pod, listener: socket.socket, port: int) -> None:
        while not self._stop.is_set() and listener.fileno() != -1:
            try:
                conn, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self.captured.put(Captured(pod.uid, port, peer, original_dst(conn)))
                with contextlib.suppress(OSError):
                    conn.sendall(f"ztunnel {port} {pod.uid}\n".encode())

    @staticmethod
    def _close(pod: _Pod) -> None:
        for listener in pod.listeners:
            listener.close()
        pod.listeners.clear()
