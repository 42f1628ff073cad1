"""The istio-cni plugin ↔ node agent protocol (docs/cluster.md): one JSON request per connection
on the agent's unix stream socket, one JSON reply, then the connection closes.

Request: `{"event": "ADD"|"DEL", "pod_namespace", "pod_name", "pod_uid", "container_id", "netns",
"ips": [...], "wait": seconds}`. `wait` (an extension of the contract) bounds how long the agent
may spend capturing the pod before it answers. Reply: `{"ok": true, "enrolled": bool, "captured":
bool}` or `{"ok": false, "error": "..."}`. `enrolled` says the pod belongs in the mesh, which the
plugin's hold mode needs to tell "not ours" from "ours but not captured".

Standard library only: the plugin imports this on every pod start.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

EVENTS = ("ADD", "DEL")
MAX_MESSAGE = 64 * 1024


class EventError(ValueError):
    """A request or reply that does not follow the protocol."""


@dataclass(frozen=True, kw_only=True)
class PluginEvent:
    """What the plugin tells the agent about one pod."""

    event: str
    pod_namespace: str
    pod_name: str
    pod_uid: str
    container_id: str = ""
    netns: str = ""
    ips: tuple[str, ...] = ()
    wait: float = 0.0

    def to_json(self) -> bytes:
        return json.dumps({**asdict(self), "ips": list(self.ips)}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PluginEvent:
        """Parse and check a request (raises EventError naming the bad field)."""
        try:
            raw = json.loads(data)
        except ValueError as e:
            raise EventError(f"not JSON: {e}") from None
        if not isinstance(raw, dict):
            raise EventError("expected a JSON object")
        if raw.get("event") not in EVENTS:
            raise EventError(f"event: expected one of {', '.join(EVENTS)}, got {raw.get('event')!r}")
        for name in ("pod_namespace", "pod_name", "pod_uid"):
            if not isinstance(raw.get(name), str) or not raw[name]:
                raise EventError(f"{name}: expected a non-empty string")
        ips = raw.get("ips") or []
        if not isinstance(ips, list) or not all(isinstance(ip, str) for ip in ips):
            raise EventError("ips: expected a list of strings")
        try:
            wait = max(0.0, float(raw.get("wait") or 0.0))
        except (TypeError, ValueError):
            raise EventError("wait: expected a number of seconds") from None
        return cls(
            event=raw["event"],
            pod_namespace=raw["pod_namespace"],
            pod_name=raw["pod_name"],
            pod_uid=raw["pod_uid"],
            container_id=str(raw.get("container_id") or ""),
            netns=str(raw.get("netns") or ""),
            ips=tuple(ips),
            wait=wait,
        )


@dataclass(frozen=True, kw_only=True)
class AgentReply:
    """The agent's answer."""

    ok: bool
    enrolled: bool = False
    captured: bool = False
    error: str = ""

    def to_json(self) -> bytes:
        body: dict = {"ok": self.ok}
        if self.ok:
            body.update(enrolled=self.enrolled, captured=self.captured)
        else:
            body["error"] = self.error
        return json.dumps(body).encode()

    @classmethod
    def from_json(cls, data: bytes) -> AgentReply:
        try:
            raw = json.loads(data)
        except ValueError as e:
            raise EventError(f"agent reply is not JSON: {e}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("ok"), bool):
            raise EventError("agent reply: expected an object with a boolean 'ok'")
        return cls(
            ok=raw["ok"],
            enrolled=bool(raw.get("enrolled")),
            captured=bool(raw.get("captured")),
            error=str(raw.get("error") or ""),
        )
