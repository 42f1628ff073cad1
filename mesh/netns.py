"""Network namespaces: create and delete named ones, enter one around a `socket()` call, run a
process inside one, and pass one to another process (its fd).

`setns` changes only the calling thread's namespace, so `entered()` is kept tight around the
system calls that must happen inside (creating a socket); a socket keeps its namespace for life,
so everything after (bind, connect, accept) works from anywhere. Python 3.11 has no `os.setns`,
hence libc's through ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

NETNS_DIR = Path("/var/run/netns")
ETC_NETNS_DIR = Path("/etc/netns")  # per-namespace /etc files (iproute2's convention)
CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
MS_BIND, MS_REC, MS_SLAVE = 0x1000, 0x4000, 0x80000
NS_GET_NSTYPE = 0xB703  # ioctl: which kind of namespace an fd refers to

# The process's own symbols include libc's (ctypes.util.find_library would import shutil and
# tempfile, a megabyte of each node proxy's memory, to find what is already loaded).
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(OSError):
    """A namespace operation failed; the message names the namespace."""


def path(name: str) -> Path:
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return path(name).exists()


def create(name: str) -> Path:
    """Create a named namespace (like `ip netns add`); an existing one is reused."""
    if not exists(name):
        result = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
        if result.returncode != 0 and not exists(name):
            raise NetnsError(f"ip netns add {name}: {result.stderr.strip()}")
    return path(name)


def delete(name: str) -> None:
    """Delete a named namespace and its /etc/netns/NAME files; a missing one is fine."""
    if exists(name):
        result = subprocess.run(["ip", "netns", "delete", name], capture_output=True, text=True)
        if result.returncode != 0 and exists(name):
            raise NetnsError(f"ip netns delete {name}: {result.stderr.strip()}")
    etc = ETC_NETNS_DIR / name
    if name and "/" not in name and etc.is_dir():
        with contextlib.suppress(OSError):  # only files are put there (a pod's resolv.conf)
            for entry in etc.iterdir():
                entry.unlink()
            etc.rmdir()
            ETC_NETNS_DIR.rmdir()  # when it holds nothing more


def list_names(prefix: str = "") -> list[str]:
    if not NETNS_DIR.exists():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def _check(result: int, what: str) -> None:
    """A libc call's -1 as NetnsError naming the call and errno."""
    if result != 0:
        errno = ctypes.get_errno()
        raise NetnsError(errno, f"{what}: {os.strerror(errno)}")


def _setns(fd: int) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


@contextlib.contextmanager
def entered(target: str | Path | int) -> Iterator[None]:
    """Run the block inside a network namespace (a name, a path, or an open fd), then come back."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    fd, opened = _open(target)
    try:
        _setns(fd)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)
        if opened:
            os.close(fd)


def _open(target: str | Path | int) -> tuple[int, bool]:
    if isinstance(target, int):
        return target, False
    p = Path(target) if "/" in str(target) else path(str(target))
    try:
        return os.open(p, os.O_RDONLY | os.O_CLOEXEC), True
    except FileNotFoundError:
        raise NetnsError(f"network namespace {target} not found") from None


def socket_in(target: str | Path | int, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket living in `target`'s network namespace."""
    with entered(target):
        return socket.socket(family, kind)


def exec_in(name: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command inside a named namespace (`ip netns exec`), capturing its output."""
    return subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True, text=True, **kwargs)


def enter_in_child(target: str | Path) -> Callable[[], None]:
    """A `preexec_fn` that moves a child process into the namespace before it execs; for a named
    namespace with files under /etc/netns/NAME/ (a pod's resolv.conf), also into a mount namespace
    of its own where each is bind-mounted over its /etc counterpart, as `ip netns exec` does."""
    p = str(target) if "/" in str(target) else str(path(str(target)))
    etc = ETC_NETNS_DIR / Path(p).name if Path(p).parent == NETNS_DIR else None

    def enter() -> None:
        fd = os.open(p, os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)
        if etc is not None and etc.is_dir():
            _bind_etc(etc)

    return enter


def _bind_etc(etc: Path) -> None:
    """In a new mount namespace (receiving, not sending, the host's later mounts), each file of
    `etc` over the same name in /etc."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None), "making / a slave mount")
    for entry in sorted(os.listdir(etc)):
        source, target = etc / entry, Path("/etc") / entry
        if target.exists():
            mounted = _libc.mount(str(source).encode(), str(target).encode(), None, MS_BIND, None)
            _check(mounted, f"bind-mounting {source} on {target}")


def is_netns(fd: int) -> bool:
    """Whether an fd refers to a network namespace (ztunnel checks what it is handed)."""
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False


def inode(target: str | Path | int) -> int:
    """The namespace's inode: equal inodes mean the same namespace."""
    if isinstance(target, int):
        return os.fstat(target).st_ino
    p = Path(target) if "/" in str(target) else path(str(target))
    return os.stat(p).st_ino
