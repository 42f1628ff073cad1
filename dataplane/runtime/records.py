"""What the runtime remembers of each pod, one JSON file per pod in `{state}/runtime/pods/`.

A record is written before anything it describes exists (the netns name before CNI ADD, a
container's PID right after it starts), so a runtime killed at any moment finds on restart every
namespace, IP and process it has to adopt or tear down. Writes are atomic (temporary file, then
rename).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .status import Terminated

log = logging.getLogger("mesh-runtime.records")
Json = dict[str, Any]
VERSION = 1


@dataclass
class ContainerRecord:
    """One container's process and history. `pid` and `start_ticks` identify the running process
    (field 22 of /proc/PID/stat, so a reused PID is not mistaken for it); `terminated` is set once
    it has exited for good; `backoff` is the last crash-loop wait."""

    name: str
    pid: int | None = None
    start_ticks: int | None = None
    started_at: str = ""
    restart_count: int = 0
    last_terminated: Terminated | None = None
    terminated: Terminated | None = None
    backoff: float | None = None

    def to_json(self) -> Json:
        return {
            "name": self.name,
            "pid": self.pid,
            "startTicks": self.start_ticks,
            "startedAt": self.started_at,
            "restartCount": self.restart_count,
            "lastTerminated": self.last_terminated.to_json() if self.last_terminated else None,
            "terminated": self.terminated.to_json() if self.terminated else None,
            "backoff": self.backoff,
        }

    @classmethod
    def from_json(cls, obj: Json) -> ContainerRecord:
        return cls(
            name=obj["name"],
            pid=obj.get("pid"),
            start_ticks=obj.get("startTicks"),
            started_at=obj.get("startedAt") or "",
            restart_count=int(obj.get("restartCount") or 0),
            last_terminated=Terminated.from_json(obj["lastTerminated"]) if obj.get("lastTerminated") else None,
            terminated=Terminated.from_json(obj["terminated"]) if obj.get("terminated") else None,
            backoff=obj.get("backoff"),
        )


@dataclass
class PodRecord:
    """One pod: who it is, its netns, the conflist it was attached with and the cached final ADD
    result (for CHECK and DEL), and its containers."""

    uid: str
    namespace: str
    name: str
    netns: str
    start_time: str = ""
    cni_conf: Json | None = None
    cni_result: Json | None = None
    containers: dict[str, ContainerRecord] = field(default_factory=dict)

    def container(self, name: str) -> ContainerRecord:
        """The container's record, created empty on first use."""
        if name not in self.containers:
            self.containers[name] = ContainerRecord(name)
        return self.containers[name]

    def pids(self) -> list[tuple[int, int | None]]:
        """(pid, start ticks) of every container recorded as running."""
        return [(c.pid, c.start_ticks) for c in self.containers.values() if c.pid]

    def to_json(self) -> Json:
        return {
            "version": VERSION,
            "uid": self.uid,
            "namespace": self.namespace,
            "name": self.name,
            "netns": self.netns,
            "startTime": self.start_time,
            "cniConf": self.cni_conf,
            "cniResult": self.cni_result,
            "containers": [c.to_json() for c in self.containers.values()],
        }

    @classmethod
    def from_json(cls, obj: Json) -> PodRecord:
        if obj.get("version", VERSION) != VERSION:
            raise ValueError(f"record version {obj.get('version')} is not {VERSION}")
        containers = [ContainerRecord.from_json(c) for c in obj.get("containers") or []]
        return cls(
            uid=obj["uid"],
            namespace=obj["namespace"],
            name=obj["name"],
            netns=obj["netns"],
            start_time=obj.get("startTime") or "",
            cni_conf=obj.get("cniConf"),
            cni_result=obj.get("cniResult"),
            containers={c.name: c for c in containers},
        )


class RecordStore:
    """The records directory. Not thread-safe; the runtime uses it from its event loop only."""

    def __init__(self, directory: Path):
        self.directory = directory

    def path(self, uid: str) -> Path:
        return self.directory / f"{uid}.json"

    def save(self, record: PodRecord) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = self.path(record.uid)
        tmp = target.with_suffix(".json.tmp")
        with tmp.open("w") as f:
            json.dump(record.to_json(), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)

    def load(self, uid: str) -> PodRecord | None:
        try:
            return PodRecord.from_json(json.loads(self.path(uid).read_text()))
        except FileNotFoundError:
            return None

    def load_all(self) -> list[PodRecord]:
        """Every readable record; an unreadable one is logged and left in place for a human."""
        if not self.directory.exists():
            return []
        records = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                records.append(PodRecord.from_json(json.loads(path.read_text())))
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.error("unreadable pod record %s: %s", path, e)
        return records

    def remove(self, uid: str) -> None:
        self.path(uid).unlink(missing_ok=True)
