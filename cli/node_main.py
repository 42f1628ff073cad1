"""`mesh-node`: one node of the mesh as a container (docker-compose, docs/compose.md).

It registers the Node (the shared code of `meshctl cluster up`, cli/cluster/registration.py),
writes `node.json`, the node token (0600) and the CNI conflist into its state directory, keeps a
route to every other node's pod range (read from the Node objects: `spec.podCIDR` via the
`InternalIP` in `status.addresses`), and runs the node's three processes as children:
mesh-runtime, mesh-node-agent and ztunnel. Pods are network namespaces inside the container.

It exits 1 when a child dies (the container's restart policy brings the node back), and forwards
SIGTERM to the children. The pure parts (settings → config, the route plan, the children's argv)
are separate from the I/O so tests drive them directly.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import Field

from mesh import logs
from mesh.settings import CommonSettings, host_port, parse_settings

from .cluster import registration, topology
from .cluster.network import ClusterError
from .cluster.processes import BIN

log = logging.getLogger("mesh-node")
Json = dict[str, Any]
CHILDREN = ("mesh-runtime", "mesh-node-agent", "ztunnel")


class NodeSettings(CommonSettings):
    """Everything mesh-node reads at start-up. `--state-dir` is this node's own directory (not the
    control plane's: a node keeps its token, node.json, sockets and pod records there)."""

    state_dir: Path = Path("/var/lib/mesh-node")
    name: str = Field("", description="this node's name (required)")
    pod_cidr: str = Field("", description="this node's pod range, e.g. 198.18.1.0/24 (required)")
    node_ip: str = Field("", description="this node's IP (default: the address it reaches istiod from)")
    istiod: str = Field("", description="istiod's URL, e.g. https://istiod:6443 (required)")
    istiod_ca_file: Path | None = Field(None, description="CA bundle for istiod's certificate")
    ca: str = Field("", description="mesh-ca HOST:PORT (required)")
    xds: str = Field("", description="mesh-xds HOST:PORT (required)")
    xds_mtls: str = Field("", description="mesh-xds's mTLS HOST:PORT for pods (default: the xds host, port 15013)")
    root_cert: Path | None = Field(None, description="the mesh's trust bundle, root-cert.pem (required)")
    bootstrap_token_file: Path | None = Field(
        None,
        description="DEV ONLY: an admin token to register the Node with (e.g. istiod's admin-token on a shared "
        "volume); needed only until the node has its own token",
    )
    control_plane_cidr: str = Field(
        "", description="the containers' network (e.g. 198.19.254.0/24): pods reach it NATed behind the node's IP"
    )
    route_interval: float = Field(5.0, gt=0, description="seconds between re-reading the Nodes for routes")
    grace: float = Field(10.0, ge=0, description="seconds the children get to stop after SIGTERM")


class NodeConfigError(ValueError):
    """A setting that cannot be used; the message is `NAME=VALUE (reason)`."""


@dataclass(frozen=True)
class NodeConfig:
    """The resolved settings of one node."""

    name: str
    pod_cidr: str
    pod_gateway: str
    node_ip: str
    istiod: str
    istiod_ca_file: str
    ca: str
    xds: str
    xds_mtls: str
    root_cert: str
    state_dir: Path
    bootstrap_token_file: Path | None
    control_plane_cidr: str
    route_interval: float
    grace: float
    log_level: str

    @property
    def token_file(self) -> Path:
        return self.state_dir / "token"


def _need(name: str, value: object) -> str:
    if not value:
        raise NodeConfigError(f"MESH_{name.upper()}= (missing: pass --{name.replace('_', '-')})")
    return str(value)


def resolve(settings: NodeSettings, detect_ip: Callable[[str, int], str] | None = None) -> NodeConfig:
    """Check the settings and fill the defaults; `detect_ip(host, port)` finds the node's IP."""
    name = _need("name", settings.name)
    cidr_text = _need("pod_cidr", settings.pod_cidr)
    try:
        cidr = ipaddress.ip_network(cidr_text)
    except ValueError as e:
        raise NodeConfigError(f"MESH_POD_CIDR={cidr_text} ({e})") from None
    if settings.control_plane_cidr:
        try:
            ipaddress.ip_network(settings.control_plane_cidr)
        except ValueError as e:
            raise NodeConfigError(f"MESH_CONTROL_PLANE_CIDR={settings.control_plane_cidr} ({e})") from None
    if cidr.num_addresses < 4:
        raise NodeConfigError(f"MESH_POD_CIDR={cidr_text} (too small for a gateway and pods)")
    istiod = _need("istiod", settings.istiod)
    parts = urlsplit(istiod)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NodeConfigError(f"MESH_ISTIOD={istiod} (expected https://HOST:PORT)")
    for field in ("ca", "xds", "xds_mtls"):
        value = getattr(settings, field)
        if value:
            try:
                host_port(value)
            except ValueError as e:
                raise NodeConfigError(f"MESH_{field.upper()}={value} ({e})") from None
    xds = _need("xds", settings.xds)
    node_ip = settings.node_ip
    if not node_ip and detect_ip is not None:
        node_ip = detect_ip(parts.hostname, parts.port or 443)
    return NodeConfig(
        name=name,
        pod_cidr=str(cidr),
        pod_gateway=str(cidr.network_address + 1),
        node_ip=_need("node_ip", node_ip),
        istiod=istiod.rstrip("/"),
        istiod_ca_file=str(settings.istiod_ca_file or ""),
        ca=_need("ca", settings.ca),
        xds=xds,
        xds_mtls=settings.xds_mtls or f"{host_port(xds)[0]}:15013",
        root_cert=_need("root_cert", settings.root_cert),
        state_dir=settings.state_dir,
        bootstrap_token_file=settings.bootstrap_token_file,
        control_plane_cidr=settings.control_plane_cidr,
        route_interval=settings.route_interval,
        grace=settings.grace,
        log_level=settings.log_level,
    )


# --- pure: what to run and which routes to keep ---------------------------------------------------


def child_argvs(config: NodeConfig, bin_dir: Path = BIN) -> dict[str, list[str]]:
    """The node's processes and their argv (as `meshctl cluster up` starts them, docs/cluster.md)."""
    state, token = str(config.state_dir), str(config.token_file)
    common = ["--node", config.name, "--state-dir", state, "--istiod", config.istiod]
    if config.istiod_ca_file:
        common += ["--istiod-ca-file", config.istiod_ca_file]
    common += ["--token-file", token, "--log-level", config.log_level]
    # ztunnel reads the rest (node IP, mesh-ca, mesh-xds, the trust bundle) from node.json.
    ztunnel = ["--node", config.name, "--state-dir", state, "--token-file", token, "--log-level", config.log_level]
    args = {"mesh-runtime": common, "mesh-node-agent": common, "ztunnel": ztunnel}
    return {program: [str(bin_dir / program), *args[program]] for program in CHILDREN}


def child_env(environ: dict[str, str]) -> dict[str, str]:
    """The children's environment: this container's, without the MESH_* variables meant for
    mesh-node (the children get everything as flags, so nothing is read twice)."""
    return {k: v for k, v in environ.items() if not k.startswith("MESH_")}


@dataclass(frozen=True, order=True)
class Route:
    """Another node's pod range, reached through that node's IP."""

    cidr: str
    via: str


def _internal_ip(node: Json) -> str | None:
    for address in (node.get("status") or {}).get("addresses") or []:
        if address.get("type") == "InternalIP" and address.get("address"):
            return str(address["address"])
    return None


def route_plan(nodes: list[Json], self_name: str, own_cidr: str) -> tuple[list[Route], list[str]]:
    """The routes this node needs to the other nodes' pods, and notes on the Nodes skipped.

    A Node is skipped until it has both a podCIDR and an InternalIP (its runtime heartbeat writes
    the address), and when its range overlaps this node's own or one already routed."""
    own = ipaddress.ip_network(own_cidr)
    routes: list[Route] = []
    notes: list[str] = []
    taken: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [own]
    for node in sorted(nodes, key=lambda n: (n.get("metadata") or {}).get("name", "")):
        name = (node.get("metadata") or {}).get("name", "")
        if name == self_name:
            continue
        cidr_text, via = (node.get("spec") or {}).get("podCIDR"), _internal_ip(node)
        if not cidr_text or not via:
            notes.append(f"{name}: no podCIDR or InternalIP yet")
            continue
        try:
            cidr, _ = ipaddress.ip_network(cidr_text), ipaddress.ip_address(via)
        except ValueError as e:
            notes.append(f"{name}: {e}")
            continue
        if any(cidr.overlaps(t) for t in taken):
            notes.append(f"{name}: podCIDR {cidr} overlaps another node's range")
            continue
        taken.append(cidr)
        routes.append(Route(str(cidr), via))
    return sorted(routes), notes


def route_commands(current: list[Route], desired: list[Route]) -> list[list[str]]:
    """`ip route` commands that take the routes from `current` (what this process installed) to
    `desired`: every desired route is replaced (idempotent; it repairs a route someone removed),
    and routes of Nodes that went away are deleted."""
    keep = {r.cidr for r in desired}
    out = [["ip", "route", "del", r.cidr, "via", r.via] for r in current if r.cidr not in keep]
    out += [["ip", "route", "replace", r.cidr, "via", r.via] for r in desired]
    return out


def network_commands(pod_cidr: str, control_plane_cidr: str) -> list[tuple[list[str] | None, list[str]]]:
    """The node's own network rules, as (check, apply) command pairs: `apply` runs unless `check`
    succeeds (no check: `apply` is idempotent).

    - `unreachable 198.18.0.0/15`: a cluster address that is neither a pod here, another node's
      pod range (more specific routes) nor the containers' network goes nowhere, never out through
      the container's default route (DESIGN §9);
    - with a control-plane network: this node's pods reach it NATed behind the node's address, so
      the answers find their way back (pod-to-pod traffic keeps its IPs)."""
    out: list[tuple[list[str] | None, list[str]]] = [
        (None, ["ip", "route", "replace", "unreachable", topology.CLUSTER_RANGE])
    ]
    if control_plane_cidr:
        rule = ["POSTROUTING", "-s", pod_cidr, "-d", control_plane_cidr, "-j", "MASQUERADE"]
        out.append((["iptables", "-t", "nat", "-C", *rule], ["iptables", "-t", "nat", "-A", *rule]))
    return out


# --- I/O ----------------------------------------------------------------------------------------


def detect_ip(host: str, port: int) -> str:
    """The local address this container uses to reach `host` (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, port))
        return str(s.getsockname()[0])


def _client(config: NodeConfig, token: str) -> httpx.Client:
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=config.istiod_ca_file) if config.istiod_ca_file else True
    )
    return httpx.Client(base_url=config.istiod, headers={"Authorization": f"Bearer {token}"}, verify=verify, timeout=10)


def register(config: NodeConfig) -> None:
    """The Node and its token (with the bootstrap admin token), node.json and the conflist."""
    ndir = config.state_dir
    ndir.mkdir(parents=True, exist_ok=True, mode=0o700)
    registration.prepare_node_dir(ndir)
    bootstrap = config.bootstrap_token_file
    if bootstrap is not None and bootstrap.exists():
        _register_with_retries(config, bootstrap.read_text().strip())
    elif not config.token_file.exists():
        raise ClusterError(
            f"{config.token_file} is missing and there is no bootstrap token to register {config.name} with "
            f"(MESH_BOOTSTRAP_TOKEN_FILE={bootstrap or ''})"
        )
    info = registration.node_info(
        name=config.name,
        ip=config.node_ip,
        pod_cidr=config.pod_cidr,
        istiod=config.istiod,
        istiod_ca_file=config.istiod_ca_file,
        ca=config.ca,
        xds=config.xds,
        xds_mtls=config.xds_mtls,
        root_cert=config.root_cert,
    )
    conflist = topology.pod_conflist(config.pod_cidr, config.pod_gateway, str(ndir))
    registration.write_node_files(ndir, info, conflist)


def _register_with_retries(config: NodeConfig, admin_token: str, attempts: int = 30, delay: float = 2.0) -> None:
    """Register, retrying while istiod is not reachable yet (bounded: about a minute)."""
    for attempt in range(1, attempts + 1):
        try:
            with _client(config, admin_token) as client:
                registration.register(client, config.name, config.pod_cidr, config.token_file, log.info)
            return
        except httpx.TransportError as e:
            if attempt == attempts:
                raise ClusterError(f"istiod at {config.istiod} unreachable: {e}") from None
            log.info("istiod not reachable yet; retrying", extra={"error": str(e), "attempt": attempt})
            time.sleep(delay)


def _run(cmd: list[str]) -> bool:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        log.warning("command failed", extra={"cmd": " ".join(cmd), "error": result.stderr.strip()[-300:]})
    return result.returncode == 0


def prepare_network(config: NodeConfig) -> None:
    """Forwarding on, and the node's own rules (each added once)."""
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    for check, apply in network_commands(config.pod_cidr, config.control_plane_cidr):
        if check is None or subprocess.run(check, capture_output=True, timeout=30).returncode != 0:
            _run(apply)


class RouteKeeper:
    """Keeps the routes to the other nodes' pods in step with the Node objects."""

    def __init__(self, config: NodeConfig):
        self.config = config
        self.installed: list[Route] = []

    def sync(self) -> None:
        config = self.config
        try:
            with _client(config, config.token_file.read_text().strip()) as client:
                response = client.get("/api/v1/nodes")
                response.raise_for_status()
                nodes = response.json().get("items") or []
        except (httpx.HTTPError, OSError, ValueError) as e:
            log.warning("cannot list the Nodes; routes unchanged", extra={"error": str(e)})
            return
        desired, notes = route_plan(nodes, config.name, config.pod_cidr)
        for note in notes:
            log.debug("route skipped", extra={"note": note})
        if desired != self.installed:
            log.info("routes to other nodes' pods", extra={"routes": [f"{r.cidr} via {r.via}" for r in desired]})
        ok = [_run(cmd) for cmd in route_commands(self.installed, desired)]
        self.installed = desired if all(ok) else [r for r in desired if r in self.installed]


class Supervisor:
    """The node's children: started together; one dying stops the rest; SIGTERM is forwarded."""

    def __init__(self, argvs: dict[str, list[str]], env: dict[str, str], grace: float):
        self.argvs, self.env, self.grace = argvs, env, grace
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False

    def start(self) -> None:
        for name, argv in self.argvs.items():
            log.info("starting", extra={"child": name, "argv": argv})
            self.procs[name] = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL)

    def dead(self) -> tuple[str, int] | None:
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                return name, code
        return None

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def run(config: NodeConfig) -> int:
    """Register, prepare the network, start the children and watch them; the exit code."""
    register(config)
    prepare_network(config)
    routes = RouteKeeper(config)
    routes.sync()
    supervisor = Supervisor(child_argvs(config), child_env(dict(os.environ)), config.grace)

    def on_signal(signum: int, _frame: object) -> None:
        supervisor.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    supervisor.start()
    next_sync = time.monotonic() + config.route_interval
    while not supervisor.stopping:
        died = supervisor.dead()
        if died is not None:
            log.error("a node process exited; stopping the node", extra={"child": died[0], "code": died[1]})
            supervisor.stop()
            return 1
        if time.monotonic() >= next_sync:
            routes.sync()
            next_sync = time.monotonic() + config.route_interval
        time.sleep(0.5)
    log.info("stopping the node's processes")
    supervisor.stop()
    return 0


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(
        NodeSettings, "mesh-node", "One mesh node in a container: registers it, routes pods, runs its processes.", argv
    )
    logs.setup(settings.log_level)
    try:
        config = resolve(settings, detect_ip)
    except (NodeConfigError, OSError) as e:
        print(f"mesh-node: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        raise SystemExit(run(config))
    except (ClusterError, httpx.HTTPError, OSError) as e:
        print(f"mesh-node: {e}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
