"""What the ztunnel e2e tests do to a cluster: pods, policies, traffic from inside a pod, reading
a ztunnel's admin endpoints, and watching the wire.

Traffic is made the way `kubectl exec` would: a socket created inside the pod's network
namespace (so the pod's own capture rules apply), never from the root namespace.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cli.cluster import topology
from mesh import admin_client, netns

PODAPP = str(Path(__file__).resolve().parents[2] / "cli" / "sample_app.py")
HTTP_PORT, ECHO_PORT = 8080, 9000
SECURITY = "/apis/security.istio.io/v1/namespaces"


def wait(check: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    """Poll `check` until it returns something truthy; AssertionError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def app_pod(name: str, node: str, sa: str, app: str, namespace: str = "default", version: str = "") -> dict:
    """A pod running the sample app (cli/sample_app.py: HTTP on 8080, echo on 9000) as service account `sa`; with a
    `version`, labelled `version` and answering it as its name."""
    command = [sys.executable, PODAPP, "--http", str(HTTP_PORT), "--echo", str(ECHO_PORT), "--name", version]
    labels = {"app": app, **({"version": version} if version else {})}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": node, "serviceAccountName": sa, "containers": [{"name": "app", "command": command}]},
    }


def pod_netns(pod: dict) -> str:
    return f"mesh-pod-{pod['metadata']['uid'].replace('-', '')[:12]}"


def connect(pod: dict, ip: str, port: int, timeout: float = 5) -> socket.socket:
    """A TCP connection opened from inside `pod` (captured by its ztunnel if it is enrolled)."""
    sock = netns.socket_in(pod_netns(pod))
    sock.settimeout(timeout)
    try:
        sock.connect((ip, port))
    except OSError:
        sock.close()
        raise
    return sock


def http_get(pod: dict, ip: str, port: int = HTTP_PORT, path: str = "/", timeout: float = 5) -> dict | None:
    """GET from inside `pod`: the JSON the application answered, or None if the connection was
    refused, reset or closed without an answer (what a denied connection looks like)."""
    try:
        with connect(pod, ip, port, timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {ip}\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    return json.loads(body) if head.startswith(b"HTTP/1.1 200") and body else None


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


class HttpClient:
    """An HTTP/1.1 keep-alive connection opened from inside a pod (so its ztunnel captures it):
    what an application in the pod would do, as `kubectl exec … curl` would."""

    def __init__(self, pod: dict, ip: str, port: int, timeout: float = 10) -> None:
        self.host = f"{ip}:{port}"
        self._sock = connect(pod, ip, port, timeout)
        self._buffer = b""

    def request(self, method: str = "GET", path: str = "/", headers: dict[str, str] | None = None) -> Response:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", "Content-Length: 0"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        fields = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        size = int(fields.get("content-length") or 0)
        while len(self._buffer) < size:
            self._fill()
        body, self._buffer = self._buffer[:size], self._buffer[size:]
        return Response(int(head[0].split(" ")[1]), fields, body)

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            self._fill()
        head, _, self._buffer = self._buffer.partition(marker)
        return head

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the peer")
        self._buffer += chunk

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request(pod: dict, ip: str, port: int, method: str = "GET", path: str = "/", **headers: str) -> Response | None:
    """One request on a new connection from inside `pod`; None when the connection was refused or
    reset (an L4 denial), a Response otherwise (an L7 answer, e.g. 403 from a waypoint)."""
    try:
        with HttpClient(pod, ip, port) as client:
            return client.request(method, path, {k.replace("_", "-"): v for k, v in headers.items()})
    except OSError:
        return None


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`, from Prometheus text."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@dataclass
class EchoStream:
    """A long-lived connection from a pod to an echo server, exercised by a thread until stopped:
    a message every `interval` seconds, each expected back in full. Any failure is recorded."""

    sock: socket.socket
    interval: float = 0.25
    rounds: int = 0
    failures: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> EchoStream:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set() and not self.failures:
            message = f"ping {self.rounds}\n".encode()
            try:
                self.sock.sendall(message)
                got = b""
                while len(got) < len(message):
                    chunk = self.sock.recv(len(message) - len(got))
                    if not chunk:
                        raise ConnectionError("closed by the peer")
                    got += chunk
                if got != message:
                    raise ValueError(f"echo mismatch {got!r}")
                self.rounds += 1
            except (OSError, ValueError) as e:
                self.failures.append(f"round {self.rounds} after {time.monotonic() - self.started:.1f}s: {e}")
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()


def admin(node_ip: str, path: str, port: int = 15000) -> httpx.Response:
    """GET on a node's ztunnel: metrics (15020) and readiness (15021) on the node's underlay IP, the
    admin port (15000) on 127.0.0.1 inside the node's namespace, where only it listens."""
    if port != 15000:
        return httpx.get(f"http://{node_ip}:{port}{path}", timeout=10)
    node = next(n for n in topology.nodes(topology.MAX_NODES) if n.ip == node_ip)
    status, body = admin_client.request(port, path, namespace=node.netns)
    return httpx.Response(status, content=body, request=httpx.Request("GET", f"http://127.0.0.1:{port}{path}"))


def config_dump(node_ip: str) -> dict:
    return admin(node_ip, "/config_dump").json()


def tcp_opened(node_ip: str, source: str, destination: str) -> float:
    """The sum of istio_tcp_connections_opened_total over the series with these principals."""
    text = admin(node_ip, "/stats/prometheus", 15020).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "istio_tcp_connections_opened_total"
                and labels.get("source_principal") == source
                and labels.get("destination_principal") == destination
            ):
                total += sample.value
    return total


class WireCapture:
    """Every IPv4/TCP segment between two addresses on an interface of a namespace, captured with
    an AF_PACKET socket (no tcpdump needed): (src, sport, dst, dport, payload)."""

    def __init__(self, namespace: str, interface: str | None, a: str, b: str) -> None:
        with netns.entered(namespace):
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        if interface is not None:  # else every interface of the namespace
            self._sock.bind((interface, 0))
        self._sock.settimeout(0.1)
        self._pair = {socket.inet_aton(a), socket.inet_aton(b)}
        self.segments: list[tuple[str, int, str, int, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self._sock.recv(65536)
            except TimeoutError:
                continue
            if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
                continue
            ip = frame[14:]
            src, dst = ip[12:16], ip[16:20]
            if {src, dst} != self._pair:
                continue
            tcp = ip[(ip[0] & 0x0F) * 4 :]
            sport, dport = struct.unpack("!HH", tcp[:4])
            total = struct.unpack("!H", ip[2:4])[0]
            payload = tcp[(tcp[12] >> 4) * 4 : total - (ip[0] & 0x0F) * 4]
            self.segments.append((socket.inet_ntoa(src), sport, socket.inet_ntoa(dst), dport, bytes(payload)))

    def stop(self) -> list[tuple[str, int, str, int, bytes]]:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()
        return self.segments


def tls_server_serial(node_netns: str, ip: str, port: int = 15008) -> str:
    """The serial (hex) of the certificate a TLS server presents, read from a node's namespace.

    The HBONE server wants a client certificate and this peek has none; in TLS 1.3 the server's
    certificate arrives before the client's is asked for, so it can be read all the same."""
    import ssl

    from cryptography import x509

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    sock = netns.socket_in(node_netns)
    sock.settimeout(5)
    sock.connect((ip, port))
    with context.wrap_socket(sock, server_hostname=None) as tls:
        der = tls.getpeercert(binary_form=True)
    return format(x509.load_der_x509_certificate(der).serial_number, "x")
