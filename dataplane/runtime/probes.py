"""Readiness probes, run from inside the pod's network namespace as the kubelet's prober would
reach the pod: TCP connect, HTTP GET (2xx and 3xx succeed), or a command exiting 0.

Sockets are created inside the netns (`mesh.netns.entered` around `socket()` only: a socket keeps
its namespace, and the event loop thread must not stay in the pod's namespace). `ProbeTracker` is
the pure part: thresholds over consecutive results.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from mesh import netns

from .spec import ContainerSpec, ProbeSpec

USER_AGENT = "kube-probe/mesh-runtime"


@dataclass
class ProbeTracker:
    """Readiness from consecutive probe results (Kubernetes: not ready until `successThreshold`
    successes in a row; ready until `failureThreshold` failures in a row)."""

    success_threshold: int = 1
    failure_threshold: int = 3
    ready: bool = False
    successes: int = 0
    failures: int = 0

    def observe(self, ok: bool) -> bool:
        """Fold one result in; True when readiness changed."""
        before = self.ready
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= self.success_threshold:
                self.ready = True
        else:
            self.successes, self.failures = 0, self.failures + 1
            if self.failures >= self.failure_threshold:
                self.ready = False
        return self.ready != before


async def _connect(netns_path: Path, host: str, port: int, timeout: float) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = netns.socket_in(netns_path, family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), timeout)
    except BaseException:
        sock.close()
        raise
    return sock


async def tcp_probe(netns_path: Path, host: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        sock = await _connect(netns_path, host, port, timeout)
    except (TimeoutError, OSError) as e:
        return False, f"dial tcp {host}:{port}: {e or 'timeout'}"
    sock.close()
    return True, ""


async def http_probe(netns_path: Path, probe: ProbeSpec, host: str, timeout: float) -> tuple[bool, str]:
    """One GET; like the kubelet, HTTPS is not verified."""
    try:
        sock = await _connect(netns_path, host, probe.port, timeout)
    except (TimeoutError, OSError) as e:
        return False, f"dial tcp {host}:{probe.port}: {e or 'timeout'}"
    context = None
    if probe.scheme == "HTTPS":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    writer = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(sock=sock, ssl=context, server_hostname=host if context else None), timeout
        )
        writer.write(_request(probe, host))
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.decode("latin-1").split()
        code = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
        return 200 <= code < 400, "" if 200 <= code < 400 else f"HTTP probe failed with statuscode: {code}"
    except (TimeoutError, OSError, ssl.SSLError) as e:
        return False, f"GET {probe.path}: {e or 'timeout'}"
    finally:
        if writer is not None:
            writer.close()
        else:
            sock.close()


def _request(probe: ProbeSpec, host: str) -> bytes:
    headers = {"Host": f"{host}:{probe.port}", "User-Agent": USER_AGENT, "Accept": "*/*", "Connection": "close"}
    for name, value in probe.headers:
        headers[name] = value
    lines = [f"GET {probe.path or '/'} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1")


async def exec_probe(netns_path: Path, probe: ProbeSpec, container: ContainerSpec) -> tuple[bool, str]:
    """The command in the pod's netns with the container's environment and directory."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *probe.command,
            env=dict(container.env),
            cwd=container.working_dir or "/",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=netns.enter_in_child(netns_path),
            start_new_session=True,
        )
    except OSError as e:
        return False, f"exec {probe.command[0]}: {e}"
    try:
        code = await asyncio.wait_for(proc.wait(), probe.timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the command and whatever it started
        await proc.wait()
        return False, f"command timed out after {probe.timeout:g}s"
    return code == 0, "" if code == 0 else f"command exited with {code}"


async def run_probe(netns_path: Path, probe: ProbeSpec, container: ContainerSpec, pod_ip: str) -> tuple[bool, str]:
    """One probe; the target host defaults to the pod's IP, as in Kubernetes."""
    host = probe.host or pod_ip or "127.0.0.1"
    if probe.action == "tcp":
        return await tcp_probe(netns_path, host, probe.port, probe.timeout)
    if probe.action == "http":
        return await http_probe(netns_path, probe, host, probe.timeout)
    return await exec_probe(netns_path, probe, container)
