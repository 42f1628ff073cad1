"""A stand-in for the node agent's plugin socket: answers every istio-cni event with a fixed
reply and records the events (protocol in dataplane/cni/events.py)."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

from dataplane.cni.events import AgentReply, PluginEvent


class FakeAgent:
    """Listens on `path` from a thread until `close()`."""

    def __init__(self, path: Path, reply: AgentReply | bytes):
        self.path = path
        self.reply = reply
        self.events: list[PluginEvent] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(4096):
                    data += chunk
                self.events.append(PluginEvent.from_json(data))
                conn.sendall(self.reply if isinstance(self.reply, bytes) else self.reply.to_json())

    def close(self) -> None:
        """Stop listening (idempotent): the plugin then finds no agent."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(2)
