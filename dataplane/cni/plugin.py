"""`istio-cni`: a CNI 1.0 chained plugin that tells the node agent about each pod.

Thin by design (as Istio's plugin is): it reads the network configuration on stdin and the
`CNI_*` environment, sends one event to the agent socket named by `agent_socket` in the
configuration, and on ADD prints `prevResult` back with its own `cniVersion` (CNI spec, "Chained
plugins": a plugin in a chain must output a result; printing nothing breaks the chain). DEL and
CHECK print nothing on success.

It never fails a pod because the agent is unreachable or slow: that is logged to stderr and the
pod goes on. The one exception is `"hold": true`: when the agent answers that the pod belongs in
the mesh but could not capture it within `hold_timeout` seconds, ADD fails (CNI error 11, "try
again later"), so no pod of an ambient namespace runs uncaptured.

It is exec'd for every pod, so it imports only the standard library and the protocol module.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

from dataplane.cni.events import MAX_MESSAGE, AgentReply, EventError, PluginEvent

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")
DEFAULT_HOLD_TIMEOUT = 10.0
# CNI spec, "Error": well-known error codes.
ERR_INCOMPATIBLE_VERSION = 1
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN_LATER = 11


class CniError(Exception):
    """A failure reported to the runtime as `{cniVersion, code, msg, details}` on stdout, exit 1."""

    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, version: str) -> str:
        body: dict[str, Any] = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            body["details"] = self.details
        return json.dumps(body)


def _log(message: str) -> None:
    print(f"istio-cni: {message}", file=sys.stderr)


def parse_config(data: str) -> dict[str, Any]:
    """The network configuration from stdin, with its version checked."""
    try:
        config = json.loads(data or "{}")
    except ValueError as e:
        raise CniError(ERR_DECODE, "failed to decode the network configuration", str(e)) from None
    if not isinstance(config, dict):
        raise CniError(ERR_DECODE, "the network configuration is not a JSON object")
    version = config.get("cniVersion", "1.0.0")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            ERR_INCOMPATIBLE_VERSION,
            f"incompatible CNI version {version}",
            f"supported: {', '.join(SUPPORTED_VERSIONS)}",
        )
    return config


def parse_cni_args(value: str) -> dict[str, str]:
    """`CNI_ARGS` (`K=V;K=V`) as a dict."""
    out: dict[str, str] = {}
    for part in value.split(";"):
        key, sep, val = part.partition("=")
        if sep and key.strip():
            out[key.strip()] = val.strip()
    return out


def _ips(prev_result: dict[str, Any]) -> tuple[str, ...]:
    """The pod's addresses from the previous plugin's result (`ips[].address`, prefix dropped)."""
    ips = []
    for entry in prev_result.get("ips") or []:
        address = str((entry or {}).get("address") or "")
        if address:
            ips.append(address.split("/")[0])
    return tuple(ips)


def build_event(command: str, config: dict[str, Any], env: dict[str, str], wait: float) -> PluginEvent | None:
    """The event for the agent, or None when the pod is not a Kubernetes pod (nothing to say)."""
    args = parse_cni_args(env.get("CNI_ARGS", ""))
    namespace, name = args.get("K8S_POD_NAMESPACE", ""), args.get("K8S_POD_NAME", "")
    uid = args.get("K8S_POD_UID") or args.get("K8S_POD_INFRA_CONTAINER_ID", "")
    if not (namespace and name and uid):
        return None
    return PluginEvent(
        event=command,
        pod_namespace=namespace,
        pod_name=name,
        pod_uid=uid,
        container_id=env.get("CNI_CONTAINERID", ""),
        netns=env.get("CNI_NETNS", ""),
        ips=_ips(config.get("prevResult") or {}),
        wait=wait,
    )


def ask_agent(path: str, event: PluginEvent, timeout: float) -> AgentReply:
    """Send one event and read the reply; raises OSError or EventError when that fails."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(event.to_json())
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while sum(map(len, chunks)) < MAX_MESSAGE:
            chunk = sock.recv(4096)
            if not chunk:
                break
            chunks.append(chunk)
    return AgentReply.from_json(b"".join(chunks))


def _hold_settings(config: dict[str, Any]) -> tuple[bool, float]:
    try:
        timeout = float(config.get("hold_timeout", DEFAULT_HOLD_TIMEOUT))
    except (TypeError, ValueError):
        raise CniError(ERR_INVALID_CONFIG, "hold_timeout must be a number of seconds") from None
    return bool(config.get("hold", False)), max(timeout, 0.0)


def notify(command: str, config: dict[str, Any], env: dict[str, str]) -> None:
    """Tell the agent; fail only in hold mode when the agent says the pod is enrolled, not captured."""
    path = config.get("agent_socket")
    if not path:
        raise CniError(ERR_INVALID_CONFIG, "agent_socket is missing from the istio-cni configuration")
    hold, hold_timeout = _hold_settings(config)
    event = build_event(command, config, env, hold_timeout)
    if event is None:
        _log(f"{command}: no K8S_POD_* in CNI_ARGS, not a pod of the mesh's API; nothing to tell the agent")
        return
    pod = f"{event.pod_namespace}/{event.pod_name}"
    try:
        reply = ask_agent(str(path), event, hold_timeout + 1.0)
    except (OSError, EventError) as e:
        # The mesh being down never stops a pod (DESIGN §7), even in hold mode.
        _log(f"{command} {pod}: node agent at {path} unreachable ({e}); the pod goes on unmeshed")
        return
    if not reply.ok:
        _log(f"{command} {pod}: node agent refused the event: {reply.error}")
        return
    if command == "ADD" and hold and reply.enrolled and not reply.captured:
        raise CniError(
            ERR_TRY_AGAIN_LATER,
            f"pod {pod} belongs in the ambient mesh but was not captured within {hold_timeout:g}s",
            "the node agent could not install its redirection; check mesh-node-agent's log",
        )


def handle(command: str, config: dict[str, Any], env: dict[str, str]) -> str:
    """Run one CNI command; returns what goes to stdout (raises CniError)."""
    version = config.get("cniVersion", "1.0.0")
    if command == "VERSION":
        return json.dumps({"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)})
    if command not in ("ADD", "DEL", "CHECK"):
        raise CniError(ERR_INVALID_ENV, f"unknown CNI_COMMAND {command!r}")
    if command in ("ADD", "CHECK") and "prevResult" not in config:
        raise CniError(ERR_INVALID_CONFIG, "istio-cni must be chained after an interface plugin (no prevResult)")
    if command == "CHECK":
        return ""
    if command == "ADD" and not env.get("CNI_NETNS"):
        raise CniError(ERR_INVALID_ENV, "CNI_NETNS is required for ADD")
    notify(command, config, env)
    if command == "DEL":
        return ""
    return json.dumps({**config["prevResult"], "cniVersion": version})


def run(env: dict[str, str], stdin: str) -> tuple[int, str]:
    """The whole plugin: exit code and stdout, given the environment and stdin."""
    command = env.get("CNI_COMMAND", "")
    version = "1.0.0"
    try:
        config = parse_config(stdin) if stdin.strip() or command != "VERSION" else {}
        version = config.get("cniVersion", version)
        return 0, handle(command, config, env)
    except CniError as e:
        if command == "DEL":
            # CNI spec: DEL should succeed even when things are missing; never block teardown.
            _log(f"DEL: {e.msg} (ignored)")
            return 0, ""
        return 1, e.to_json(version)


def main() -> None:
    stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    code, out = run(dict(os.environ), stdin)
    if out:
        print(out)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
