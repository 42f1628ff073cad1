"""Starting and stopping the cluster's processes, tracked by PID and command line.

A PID is only signalled when /proc/<pid>/cmdline still shows the command we started: a PID that
was reused by something else after a crash is left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


@dataclass
class Process:
    name: str
    pid: int
    argv: list[str]
    netns: str = ""  # empty: the root namespace
    log: str = ""

    def alive(self) -> bool:
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        # The program path appears as one of the first arguments (after `ip netns exec NS`, or the
        # interpreter when it was started as a script).
        program = self.argv[0].encode()
        return any(part == program for part in cmdline[:6])

    def to_json(self) -> dict:
        return asdict(self)


def available(program: str) -> bool:
    return (BIN / program).exists()


def start(name: str, program: str, args: list[str], log: Path, netns: str = "") -> Process:
    argv = [str(BIN / program), *args]
    # nsenter, not `ip netns exec`: the latter gives the process a private mount namespace, in
    # which network namespaces it creates (pods) would be invisible to every other process.
    cmd = ["nsenter", f"--net=/var/run/netns/{netns}", "--", *argv] if netns else argv
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    started = Process(name, proc.pid, argv, netns, str(log))
    # Until the child has exec'd (and nsenter has exec'd the program), /proc/PID/cmdline still
    # shows the parent, and alive() would call the new process dead: wait for the exec.
    deadline = time.monotonic() + 5
    while not started.alive() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    return started


def stop_all(processes: list[Process], grace: float = 10.0) -> list[Process]:
    """SIGTERM to all, SIGKILL to those still there after `grace` seconds (one deadline for all,
    so their drains overlap); returns the ones not gone."""
    running = [p for p in processes if p.alive()]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(p.alive() for p in running):
        time.sleep(0.1)
    for process in running:
        if process.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
    if any(p.alive() for p in running):
        time.sleep(0.2)
    for process in running:
        _reap(process.pid)
    return [p for p in running if p.alive()]


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child (started by an earlier meshctl)
        os.waitpid(pid, os.WNOHANG)
