"""Asking a proxy's admin port, which answers on loopback only.

ztunnel's and the waypoint's `:15000` (`/config_dump`, `/debug/memory`, `POST /quitquitquit`)
listen on 127.0.0.1 of the proxy's own network namespace, as Istio's proxies do: a pod can reach
its node's underlay address and a waypoint pod's address, and must not be able to read the
proxy's state or stop it. Whoever may enter the namespace (root on the node: meshctl, the tests,
the benchmarks) opens the socket inside it, as `kubectl port-forward` reaches a pod's loopback.
"""

from __future__ import annotations

import http.client
import socket

from mesh import netns

LOOPBACK = "127.0.0.1"


class AdminError(Exception):
    """The admin port could not be asked; the message says where."""


def request(
    port: int, path: str, *, namespace: str | None = None, method: str = "GET", timeout: float = 10.0
) -> tuple[int, bytes]:
    """`method path` on 127.0.0.1:`port` inside network namespace `namespace` (None: this one);
    the status and the body."""
    where = f"127.0.0.1:{port}" + (f" in network namespace {namespace}" if namespace else "")
    try:
        sock = netns.socket_in(namespace) if namespace else socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError as e:
        raise AdminError(f"cannot open a socket for {where}: {e}") from None
    try:
        sock.settimeout(timeout)
        sock.connect((LOOPBACK, port))
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
        conn.sock = sock  # already connected, from inside the namespace
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as e:
        raise AdminError(f"{method} {path} on {where}: {e}") from None
    finally:
        sock.close()
