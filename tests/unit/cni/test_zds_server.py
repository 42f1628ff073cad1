"""The ZDS server's I/O over a real SOCK_SEQPACKET socket, with a scripted ztunnel (no root needed:
the "pod netns" is this process's own, /proc/self/ns/net)."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from dataplane.cni.nodeagent import zds_protocol as zp
from dataplane.cni.nodeagent.zds import ZdsServer

OWN_NETNS = "/proc/self/ns/net"
INFO = zp.WorkloadInfo(name="a", namespace="ns", service_account="sa")


class ScriptedZtunnel:
    """A blocking ZDS client driven step by step from the test (through threads)."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.settimeout(5)
        self.sock.connect(str(path))
        self.client = zp.ClientConnection()
        self.sock.send(self.client.hello())

    def receive(self, ack_error: str = "") -> tuple[zp.Request, int | None]:
        """One request, acknowledged; returns it and the inode of the netns fd it carried."""
        data, fds, _flags, _ = socket.recv_fds(self.sock, zp.READ_SIZE, 1)
        try:
            request = self.client.receive(data, len(fds))
            inode = os.fstat(fds[0]).st_ino if fds else None
        finally:
            for fd in fds:
                os.close(fd)
        self.sock.send(self.client.ack(ack_error))
        return request, inode

    def close(self) -> None:
        self.sock.close()


async def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_snapshot_updates_and_reconnect(tmp_path: Path) -> None:
    server = ZdsServer(tmp_path / "zds.sock", ack_timeout=2)
    own_inode = os.stat(OWN_NETNS).st_ino
    assert await server.add("u1", INFO, OWN_NETNS) == "", "no ztunnel yet: kept for the snapshot"
    server.keep("u2")
    await server.start()
    try:
        zt = await asyncio.to_thread(ScriptedZtunnel, server.path)
        first = [await asyncio.to_thread(zt.receive) for _ in range(3)]
        assert first == [(zp.Add("u1", INFO), own_inode), (zp.Keep("u2"), None), (zp.SnapshotSent(), None)]
        await wait_until(lambda: server.snapshots_sent == 1)

        # After the snapshot: an Add waits for its Ack, which the client sends from its thread.
        reader = asyncio.create_task(asyncio.to_thread(zt.receive, "refused"))
        assert await server.add("u3", INFO, OWN_NETNS) == "refused"
        assert (await reader) == (zp.Add("u3", INFO), own_inode)
        assert await server.add("u3", INFO, OWN_NETNS) == "", "same netns again: nothing sent"

        reader = asyncio.create_task(asyncio.to_thread(zt.receive))
        assert await server.delete("u1") == ""
        assert (await reader) == (zp.Del("u1"), None)

        # A reconnecting ztunnel gets the snapshot again: what is enrolled now.
        zt.close()
        await wait_until(lambda: server.connections == 0)
        zt = await asyncio.to_thread(ScriptedZtunnel, server.path)
        again = [await asyncio.to_thread(zt.receive) for _ in range(3)]
        assert again == [(zp.Keep("u2"), None), (zp.Add("u3", INFO), own_inode), (zp.SnapshotSent(), None)]
        zt.close()
    finally:
        await server.close()
    assert not server.path.exists()


async def test_new_pods_go_to_the_newest_connection_and_del_to_all(tmp_path: Path) -> None:
    server = ZdsServer(tmp_path / "zds.sock", ack_timeout=2)
    await server.start()
    try:
        old = await asyncio.to_thread(ScriptedZtunnel, server.path)
        assert (await asyncio.to_thread(old.receive))[0] == zp.SnapshotSent()
        new = await asyncio.to_thread(ScriptedZtunnel, server.path)
        assert (await asyncio.to_thread(new.receive))[0] == zp.SnapshotSent()
        await wait_until(lambda: server.snapshots_sent == 2)
        reader = asyncio.create_task(asyncio.to_thread(new.receive))
        assert await server.add("u1", INFO, OWN_NETNS) == ""
        assert (await reader)[0] == zp.Add("u1", INFO)
        readers = [asyncio.create_task(asyncio.to_thread(z.receive)) for z in (old, new)]
        assert await server.delete("u1") == ""
        assert [(await r)[0] for r in readers] == [zp.Del("u1"), zp.Del("u1")]
        old.close()
        new.close()
    finally:
        await server.close()


async def test_silent_ztunnel_is_dropped_after_the_ack_timeout(tmp_path: Path) -> None:
    server = ZdsServer(tmp_path / "zds.sock", ack_timeout=0.3)
    await server.add("u1", INFO, OWN_NETNS)
    await server.start()
    try:
        zt = await asyncio.to_thread(ScriptedZtunnel, server.path)  # says hello, then never acks
        await wait_until(lambda: server.connections == 1)
        await wait_until(lambda: server.connections == 0)
        zt.close()
    finally:
        await server.close()
