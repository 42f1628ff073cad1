"""A pod as the runtime sees it: frozen domain types converted once from the API's JSON.

What this runtime cannot honour is not an exception: the container carries a `problem` (a
Kubernetes waiting reason and a message saying what to change), and the supervisor reports it in
the container's status, as the kubelet does with `CreateContainerConfigError`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Json = dict[str, Any]
CONFIG_ERROR = "CreateContainerConfigError"
NO_COMMAND = "NoCommand"
# The mesh's own programs (`waypoint`, `mesh-sample-app`) come first: here they play the role of
# the images a kubelet would pull, and they live beside the interpreter running this runtime.
MESH_BIN = str(Path(sys.executable).parent)
BASE_PATH = f"{MESH_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Kubernetes' probe defaults (core/v1 Probe field documentation).
PROBE_PERIOD, PROBE_TIMEOUT, PROBE_FAILURES, PROBE_SUCCESSES = 10.0, 1.0, 3, 1


@dataclass(frozen=True)
class ProbeSpec:
    """A readiness probe: one action and its timing."""

    action: Literal["tcp", "http", "exec"]
    port: int = 0
    host: str = ""
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    initial_delay: float = 0.0
    period: float = PROBE_PERIOD
    timeout: float = PROBE_TIMEOUT
    success_threshold: int = PROBE_SUCCESSES
    failure_threshold: int = PROBE_FAILURES


@dataclass(frozen=True)
class ContainerSpec:
    """One container: the argv it runs (command + args, `$(VAR)` expanded), its environment and
    directory, its readiness probe, and the reason it cannot run, if any."""

    name: str
    image: str = ""
    argv: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    working_dir: str = "/"
    readiness: ProbeSpec | None = None
    problem: tuple[str, str] | None = None  # (waiting reason, message)


@dataclass(frozen=True)
class PodSpec:
    """The parts of a pod the runtime acts on."""

    uid: str
    namespace: str
    name: str
    node_name: str
    restart_policy: str
    grace_seconds: float
    containers: tuple[ContainerSpec, ...]
    phase: str = "Pending"
    service_account: str = "default"
    automount_token: bool = True  # spec.automountServiceAccountToken (false: no token, no MESH_TOKEN_FILE)
    source: Json = field(default_factory=dict, compare=False, repr=False)  # the pod JSON it was read from

    def with_base_env(self, base: Mapping[str, str]) -> PodSpec:
        """The same pod with `base` under every container's `env` (the runtime's own variables,
        known once the pod's network is up), so `$(VAR)` in `env`, `command` and `args` sees them."""
        return pod_from_json(self.source, base)

    @property
    def netns_name(self) -> str:
        """docs/cluster.md: `mesh-pod-{first 12 hex of its uid}`."""
        return netns_name(self.uid)

    @property
    def full_name(self) -> str:
        return f"{self.namespace}/{self.name}"


def netns_name(uid: str) -> str:
    return "mesh-pod-" + uid.replace("-", "")[:12]


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: a defined variable is replaced, an undefined reference is
    kept as written, and `$$` is an escaped `$` (so `$$(VAR)` stays `$(VAR)`)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if text.startswith("$(", i):
            end = text.find(")", i + 2)
            if end != -1:
                name = text[i + 2 : end]
                out.append(env.get(name, text[i : end + 1]))
                i = end + 1
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


def container_env(
    pod_name: str, raw: list[Json], base: Mapping[str, str] | None = None
) -> tuple[tuple[tuple[str, str], ...], str | None]:
    """The container's environment: a small base (PATH, HOSTNAME, HOME, as an image and the kubelet
    would give, plus `base`: the mesh's variables) overlaid by `env`, each value expanded against
    the ones before it. The second item names the first entry this runtime cannot honour."""
    env: dict[str, str] = {"PATH": BASE_PATH, "HOSTNAME": pod_name, "HOME": "/root", **(base or {})}
    for i, entry in enumerate(raw):
        name = entry.get("name", "")
        if entry.get("valueFrom") is not None:
            return (), (
                f"env[{i}] {name}: valueFrom is not supported by mesh-runtime (there are no ConfigMaps, Secrets "
                "or downward API here); give the variable a literal `value`"
            )
        env[name] = expand(entry.get("value") or "", env)
    return tuple(env.items()), None


def _resolve_port(port: Any, ports: list[Json]) -> int:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for p in ports:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"port {port!r} is not the name of one of the container's ports")


def probe_from_json(raw: Json, ports: list[Json]) -> ProbeSpec:
    """A ProbeSpec, or ValueError saying which part is unsupported."""
    timing = {
        "initial_delay": float(raw.get("initialDelaySeconds") or 0),
        "period": float(raw.get("periodSeconds") or PROBE_PERIOD),
        "timeout": float(raw.get("timeoutSeconds") or PROBE_TIMEOUT),
        "success_threshold": int(raw.get("successThreshold") or PROBE_SUCCESSES),
        "failure_threshold": int(raw.get("failureThreshold") or PROBE_FAILURES),
    }
    if raw.get("tcpSocket"):
        tcp = raw["tcpSocket"]
        return ProbeSpec("tcp", port=_resolve_port(tcp.get("port"), ports), host=tcp.get("host") or "", **timing)
    if raw.get("httpGet"):
        http = raw["httpGet"]
        headers = tuple((h["name"], h["value"]) for h in http.get("httpHeaders") or [])
        return ProbeSpec(
            "http",
            port=_resolve_port(http.get("port"), ports),
            host=http.get("host") or "",
            path=http.get("path") or "/",
            scheme=(http.get("scheme") or "HTTP").upper(),
            headers=headers,
            **timing,
        )
    if raw.get("exec"):
        command = tuple((raw["exec"] or {}).get("command") or ())
        if not command:
            raise ValueError("exec.command is empty")
        return ProbeSpec("exec", command=command, **timing)
    if raw.get("grpc"):
        raise ValueError("grpc probes are not supported by mesh-runtime; use tcpSocket, httpGet or exec")
    raise ValueError("no action: give tcpSocket, httpGet or exec")


def container_from_json(pod_name: str, raw: Json, base: Mapping[str, str] | None = None) -> ContainerSpec:
    """One container; never raises: what cannot run becomes the container's `problem`."""
    name = raw["name"]
    image = raw.get("image") or ""
    env, env_problem = container_env(pod_name, raw.get("env") or [], base)
    problem: tuple[str, str] | None = (CONFIG_ERROR, env_problem) if env_problem else None
    if raw.get("envFrom") and problem is None:
        problem = (CONFIG_ERROR, "envFrom is not supported by mesh-runtime; list the variables in `env`")
    readiness = None
    if raw.get("readinessProbe") and problem is None:
        try:
            readiness = probe_from_json(raw["readinessProbe"], raw.get("ports") or [])
        except (ValueError, KeyError, TypeError) as e:
            problem = (CONFIG_ERROR, f"readinessProbe: {e}")
    command = raw.get("command") or []
    if not command and problem is None:
        problem = (
            NO_COMMAND,
            f"container {name} has no `command`: mesh-runtime runs host commands and never pulls or inspects "
            f"images{' (' + image + ')' if image else ''}; give the command to run",
        )
    lookup = dict(env)
    argv = tuple(expand(a, lookup) for a in [*command, *(raw.get("args") or [])])
    return ContainerSpec(
        name=name,
        image=image,
        argv=argv if command else (),
        env=env,
        working_dir=raw.get("workingDir") or "/",
        readiness=readiness,
        problem=problem,
    )


def pod_from_json(obj: Json, base_env: Mapping[str, str] | None = None) -> PodSpec:
    """A PodSpec from a pod object as the API serves it (defaults already applied)."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    grace = spec.get("terminationGracePeriodSeconds")
    return PodSpec(
        uid=meta["uid"],
        namespace=meta.get("namespace") or "default",
        name=meta["name"],
        node_name=spec.get("nodeName") or "",
        restart_policy=spec.get("restartPolicy") or "Always",
        grace_seconds=float(30 if grace is None else grace),
        containers=tuple(container_from_json(meta["name"], c, base_env) for c in spec.get("containers") or []),
        phase=(obj.get("status") or {}).get("phase") or "Pending",
        service_account=spec.get("serviceAccountName") or spec.get("serviceAccount") or "default",
        automount_token=spec.get("automountServiceAccountToken") is not False,
        source=obj,
    )
