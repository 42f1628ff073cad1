"""One pod handed over by the node agent: its netns, its listeners, its connections.

ztunnel serves each enrolled pod from inside the pod's own network namespace (reference §4,
"On Add"): 15001 (outbound capture), 15006 (inbound plaintext) and 15008 (inbound HBONE) are
bound there, so the pod owning a listener is the source (outbound) or destination (inbound) of
every connection it accepts. The pod's outbound HBONE pool lives here too (ztunnel keeps one pool
per workload): its connections are opened from the pod's netns.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from dataplane.cni.nodeagent.zds_protocol import WorkloadInfo
from mesh.hbone import HboneServer, Pool, SpliceResult, Tunnel
from mesh.identity import Identity

from ..state import StateStore, Workload

log = logging.getLogger("ztunnel.inpod")


def pod_workload_uid(cluster_id: str, info: WorkloadInfo) -> str:
    """The xDS uid of the pod's Workload: `{cluster}//Pod/{ns}/{name}` (reference §1)."""
    return f"{cluster_id}//Pod/{info.namespace}/{info.name}"


class PodProxy:
    """The proxy state of one pod. Created on ZDS Add, closed on Del (or when a snapshot no longer
    names it). Owns the netns fd it was handed."""

    def __init__(
        self, uid: str, info: WorkloadInfo, netns_fd: int, identity: Identity, store: StateStore, cluster_id: str
    ) -> None:
        self.uid = uid
        self.info = info
        self.netns_fd = netns_fd
        self.inode = os.fstat(netns_fd).st_ino
        self.identity = identity
        self._store = store
        self._workload_uid = pod_workload_uid(cluster_id, info)
        self.listeners: list[socket.socket] = []
        self.hbone_server: HboneServer | None = None
        self.hbone_socket: socket.socket | None = None  # 15008: accepted from by hbone_server
        self.pool: Pool | None = None
        self._acceptors: set[asyncio.Task[None]] = set()
        self._connections: set[asyncio.Task[None]] = set()
        self._tunnels: set[Tunnel] = set()  # open relays: their handlers' tasks have ended
        self.closed = False

    @property
    def name(self) -> str:
        """`namespace/name`, for logs and the connections listing."""
        return f"{self.info.namespace}/{self.info.name}"

    def workload(self) -> Workload | None:
        """The pod's Workload as xDS last described it; None until it arrives. Looked up by uid,
        else by namespace and name among the node's workloads (istio/ztunnel finds a proxy's
        workload by namespace and service account, then name)."""
        found = self._store.workload(self._workload_uid)
        if found is not None:
            return found
        for workload in self._store.workloads():
            if (workload.namespace, workload.name) == (self.info.namespace, self.info.name):
                return workload
        return None

    def accept_on(
        self, sock: socket.socket, handle: Callable[[PodProxy, socket.socket], Coroutine[Any, Any, None]]
    ) -> None:
        """Accept connections on `sock` (a listener in the pod) and run `handle` for each."""
        self.listeners.append(sock)
        task = asyncio.ensure_future(self._accept_loop(sock, handle))
        self._acceptors.add(task)
        task.add_done_callback(self._acceptors.discard)

    async def _accept_loop(
        self, sock: socket.socket, handle: Callable[[PodProxy, socket.socket], Coroutine[Any, Any, None]]
    ) -> None:
        loop = asyncio.get_running_loop()
        while not self.closed:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as e:
                if sock.fileno() < 0 or self.closed:
                    return
                log.warning("accept failed", extra={"pod": self.name, "error": str(e)})
                await asyncio.sleep(0.1)  # e.g. EMFILE: back off and keep serving
                continue
            # A done callback, not a wrapping coroutine, catches what the handler raises: one
            # frame less held for every open connection.
            task = asyncio.ensure_future(handle(self, conn))
            self._connections.add(task)
            task.add_done_callback(functools.partial(self._connection_done, conn))

    def hold(self, tunnel: Tunnel, on_done: Callable[[asyncio.Future[SpliceResult]], None]) -> None:
        """Keep an open tunnel (a relay that runs on callbacks, without a task) for the drain;
        when it finishes, let it go and call `on_done(tunnel.finished)` (one done callback per
        tunnel: a thousand open tunnels each pay for what they hold)."""
        self._tunnels.add(tunnel)
        tunnel.finished.add_done_callback(functools.partial(self._tunnel_done, tunnel, on_done))

    def _tunnel_done(
        self,
        tunnel: Tunnel,
        on_done: Callable[[asyncio.Future[SpliceResult]], None],
        finished: asyncio.Future[SpliceResult],
    ) -> None:
        self._tunnels.discard(tunnel)
        on_done(finished)

    def _connection_done(self, conn: socket.socket, task: asyncio.Task[None]) -> None:
        """Whatever a connection's handler raised ends that connection only."""
        self._connections.discard(task)
        if task.cancelled():
            conn.close()
            return
        error = task.exception()
        if error is not None:
            log.error("connection handler failed", extra={"pod": self.name}, exc_info=error)
            conn.close()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run a connection's task; drain waits for these."""
        task = asyncio.ensure_future(coroutine)
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    def stop_accepting(self) -> None:
        """Close the listeners (another ztunnel sharing them by SO_REUSEPORT goes on accepting)."""
        for task in list(self._acceptors):
            task.cancel()
        for sock in self.listeners:
            sock.close()
        self.listeners.clear()

    async def close(self, grace: float) -> None:
        """Stop accepting, let open connections finish for up to `grace` seconds, then cut them."""
        if self.closed:
            return
        self.closed = True
        self.stop_accepting()
        waits: list[Coroutine[Any, Any, Any]] = []
        if self.hbone_server is not None:
            waits.append(self.hbone_server.close(grace))
        if self._connections:
            waits.append(asyncio.wait(list(self._connections), timeout=grace))
        if self._tunnels:
            waits.append(asyncio.wait([t.finished for t in self._tunnels], timeout=grace))
        if waits:
            await asyncio.gather(*waits, return_exceptions=True)
        for task in list(self._connections):
            task.cancel()
        for tunnel in list(self._tunnels):
            tunnel.cut(ConnectionAbortedError("the pod's proxy was released before the tunnel ended"))
        if self.hbone_socket is not None:
            self.hbone_socket.close()  # the server closed it if it ever listened; else it is ours
        if self.pool is not None:
            self.pool.close()
        with contextlib.suppress(OSError):
            os.close(self.netns_fd)
        log.info("pod released", extra={"pod": self.name, "uid": self.uid})
