"""The agent's pods, keyed by uid: the latest API object, where its netns is, what we did to it.

The netns path comes from the plugin's ADD; for pods that were already running when the agent
started it is found in the agent's own record (`cni/agent-pods.json`, written whenever a path is
learnt), in mesh-runtime's per-pod record (`runtime/pods/{uid}.json`, its `netns`), or by the
runtime's naming rule `/var/run/netns/mesh-pod-{uid[:12]}` (docs/cluster.md), in that order.

Not thread-safe: used from the agent's event loop only.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("mesh.cni.podcache")
Json = dict[str, Any]


@dataclass
class PodEntry:
    """One pod of this node."""

    uid: str
    namespace: str
    name: str
    pod: Json | None = None  # the latest object from the API; None once deleted (or not yet seen)
    netns: str = ""  # learnt from the plugin or a record
    ips: tuple[str, ...] = ()
    captured: bool | None = None  # our rules are in its netns; None: unknown, look


def uid_of(pod: Json) -> str:
    return str((pod.get("metadata") or {}).get("uid") or "")


class PodCache:
    """Pods by uid, with a namespace index and the persisted netns record."""

    def __init__(
        self, record_file: Path | None = None, runtime_dir: Path | None = None, netns_dir: Path = Path("/var/run/netns")
    ):
        self.record_file = record_file
        self.runtime_dir = runtime_dir
        self.netns_dir = netns_dir
        self._pods: dict[str, PodEntry] = {}

    def get(self, uid: str) -> PodEntry | None:
        return self._pods.get(uid)

    def uids(self) -> list[str]:
        return list(self._pods)

    def in_namespace(self, namespace: str) -> list[str]:
        return [uid for uid, e in self._pods.items() if e.namespace == namespace]

    def upsert(self, pod: Json) -> PodEntry:
        """Record the latest API object of a pod."""
        meta = pod.get("metadata") or {}
        uid = uid_of(pod)
        entry = self._pods.get(uid)
        if entry is None:
            entry = self._pods[uid] = PodEntry(uid, meta.get("namespace", ""), meta.get("name", ""))
        entry.pod = pod
        return entry

    def deleted(self, pod: Json) -> PodEntry | None:
        """The pod is gone from the API (the entry stays until it is released)."""
        entry = self._pods.get(uid_of(pod))
        if entry is not None:
            entry.pod = None
        return entry

    def set_netns(self, uid: str, namespace: str, name: str, netns: str, ips: tuple[str, ...] = ()) -> PodEntry:
        """What the plugin's ADD said; a new path means a new sandbox, so capture is re-checked."""
        entry = self._pods.get(uid) or self._pods.setdefault(uid, PodEntry(uid, namespace, name))
        if entry.netns != netns:
            entry.captured = None
        entry.netns, entry.ips = netns, ips or entry.ips
        self.save()
        return entry

    def clear_netns(self, uid: str) -> None:
        """The plugin's DEL: the sandbox is going away."""
        entry = self._pods.get(uid)
        if entry is not None and entry.netns:
            entry.netns, entry.captured = "", None
            self.save()

    def forget(self, uid: str) -> None:
        if self._pods.pop(uid, None) is not None:
            self.save()

    # --- finding a netns ------------------------------------------------------------------------

    def netns_for(self, entry: PodEntry) -> str:
        """The pod's netns path if it exists on this machine, else ""."""
        candidates = [entry.netns, self._runtime_netns(entry.uid), str(self.netns_dir / f"mesh-pod-{entry.uid[:12]}")]
        for candidate in candidates:
            if candidate and os.path.exists(candidate):
                if candidate != entry.netns:
                    entry.netns, entry.captured = candidate, None
                return candidate
        return ""

    def _runtime_netns(self, uid: str) -> str:
        """mesh-runtime's record `{uid}.json` names the netns (a name under netns_dir, or a path)."""
        if self.runtime_dir is None:
            return ""
        try:
            netns = str(json.loads((self.runtime_dir / f"{uid}.json").read_text()).get("netns") or "")
        except (OSError, ValueError, AttributeError):
            return ""
        return netns if not netns or "/" in netns else str(self.netns_dir / netns)

    # --- persistence ----------------------------------------------------------------------------

    def load(self) -> None:
        """Read the netns paths recorded before a restart."""
        if self.record_file is None or not self.record_file.exists():
            return
        try:
            records = json.loads(self.record_file.read_text())
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable pod record %s: %s", self.record_file, e)
            return
        for uid, r in records.items():
            entry = PodEntry(uid, r.get("namespace", ""), r.get("name", ""), netns=r.get("netns", ""))
            entry.ips = tuple(r.get("ips") or ())
            self._pods.setdefault(uid, entry)

    def save(self) -> None:
        """Write the netns paths (atomically: a crash never leaves half a file)."""
        if self.record_file is None:
            return
        records = {
            uid: {"namespace": e.namespace, "name": e.name, "netns": e.netns, "ips": list(e.ips)}
            for uid, e in self._pods.items()
            if e.netns
        }
        self.record_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.record_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=1, sort_keys=True))
        os.replace(tmp, self.record_file)
