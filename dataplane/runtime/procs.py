"""Container processes: start one inside a pod's netns, recognise it again, wait for its exit,
signal its process group.

A container is a direct child (a `Popen`) while this runtime runs; after a runtime restart it is
somebody else's child and is only watched: a pidfd becomes readable when it exits (Linux 5.3+;
otherwise `os.kill(pid, 0)` is polled). Its exit status then cannot be known, since only the
parent can reap it. Identity is the pair (pid, start time in clock ticks since boot), so a PID
reused by an unrelated process is never adopted or signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from pathlib import Path

from mesh import netns

from .spec import ContainerSpec

POLL_SECONDS = 0.5


class StartError(Exception):
    """The container's process could not be started (command not found, bad working directory)."""


def start_container(spec: ContainerSpec, netns_path: Path, log_path: Path) -> subprocess.Popen:
    """Start `spec.argv` in the pod's netns, in a new session (so its process group can be
    signalled as a whole and a runtime restart leaves it alone), output appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        try:
            return subprocess.Popen(
                list(spec.argv),
                env=dict(spec.env),
                cwd=spec.working_dir or "/",
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=netns.enter_in_child(netns_path),
                start_new_session=True,
                close_fds=True,
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise StartError(f"{spec.argv[0] if spec.argv else '?'}: {e}") from e


def start_ticks(pid: int) -> int | None:
    """The process's start time (ticks since boot), or None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 overall: starttime


def zombie_exit_code(pid: int) -> int | None:
    """The Popen-style return code of a zombie that is not our child, read from /proc/PID/stat
    (field 52, Linux 3.5+) before its parent reaps it; None when it is already gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] != "Z" or len(fields) < 50:
        return None
    return os.waitstatus_to_exitcode(int(fields[49]))


def is_same_process(pid: int | None, ticks: int | None) -> bool:
    """Whether `pid` is still the process that was recorded with `ticks`."""
    return bool(pid) and ticks is not None and start_ticks(pid) == ticks


def signal_group(pid: int, sig: int) -> bool:
    """Send `sig` to the process group led by `pid` (start_new_session made it one); False when
    nothing was left to signal."""
    try:
        os.killpg(pid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


async def wait_exit(pid: int, popen: subprocess.Popen | None) -> int | None:
    """Wait until the process exits. Its Popen return code when it is our child, else None
    (the exit status of an adopted process is lost with its original parent)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        fd = None
    except OSError:  # no pidfd on this kernel: poll
        fd = -1
    if fd is None:
        pass
    elif fd == -1:
        while popen.poll() is None if popen else _alive(pid):
            await asyncio.sleep(POLL_SECONDS)
    else:
        try:
            await _readable(fd)
        finally:
            os.close(fd)
    if popen is not None:
        return popen.wait()
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start_ticks(pid) is not None


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        loop.remove_reader(fd)


async def stop_group(pid: int, popen: subprocess.Popen | None, grace: float) -> bool:
    """SIGTERM the group, SIGKILL it after `grace` seconds if the leader still runs. True when the
    SIGKILL was needed."""
    if not signal_group(pid, signal.SIGTERM):
        return False
    try:
        await asyncio.wait_for(wait_exit(pid, popen), grace)
        killed = False
    except TimeoutError:
        killed = True
    # Whatever else the container started in its group goes too, as the kubelet kills a whole
    # container cgroup.
    signal_group(pid, signal.SIGKILL)
    if killed:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wait_exit(pid, popen), 10)
    return killed
