"""The CNI driver: execute a conflist's plugins as a container runtime does.

Each plugin runs as a child process of the runtime, hence in the node's network namespace, with
the clean environment and stdin built by `cni_config`. A failing plugin exits non-zero and prints
`{"code", "msg", "details"}` (CNI spec 1.0, "Error"); that becomes a `CniError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from .cni_config import (
    ADD,
    CHECK,
    DEL,
    VERSION,
    Attachment,
    NetworkList,
    order,
    passes_cached_result,
    plugin_config,
    plugin_env,
)

log = logging.getLogger("mesh-runtime.cni")
Json = dict[str, Any]

# Codes for failures the runtime detects itself. The spec reserves 1-99 for its own codes and
# leaves 100+ to plugins; these sit at the top of that range so they are easy to tell apart in logs.
CODE_UNKNOWN = 999
CODE_NOT_FOUND = 998
CODE_TIMEOUT = 997
CODE_BAD_OUTPUT = 996


class CniError(Exception):
    """A plugin failed; `code` and `msg` are the plugin's own when it printed them."""

    def __init__(self, plugin: str, command: str, code: int, msg: str, details: str = ""):
        self.plugin = plugin
        self.command = command
        self.code = code
        self.msg = msg
        self.details = details
        extra = f": {details}" if details else ""
        super().__init__(f"CNI {command} {plugin} failed (code {code}): {msg}{extra}")


def find_plugin(plugin_type: str, paths: tuple[str, ...]) -> Path:
    """The plugin executable named `plugin_type` in the first directory of `paths` that has it."""
    if "/" in plugin_type:
        raise CniError(plugin_type, "FIND", CODE_NOT_FOUND, "a plugin type is a name, not a path")
    for directory in paths:
        candidate = Path(directory) / plugin_type
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise CniError(plugin_type, "FIND", CODE_NOT_FOUND, f"no executable {plugin_type!r} in CNI_PATH {':'.join(paths)}")


def parse_output(plugin: str, command: str, returncode: int, stdout: bytes, stderr: bytes) -> Json | None:
    """The plugin's result (None when it printed nothing), or the CniError it reported."""
    text = stdout.decode(errors="replace").strip()
    if returncode != 0:
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        msg = body.get("msg") or stderr.decode(errors="replace").strip()[-500:] or f"exit status {returncode}"
        raise CniError(plugin, command, int(body.get("code") or CODE_UNKNOWN), msg, str(body.get("details") or ""))
    if not text:
        return None
    try:
        result = json.loads(text)
    except ValueError as e:
        raise CniError(plugin, command, CODE_BAD_OUTPUT, f"printed something that is not JSON ({e})") from None
    if not isinstance(result, dict):
        raise CniError(plugin, command, CODE_BAD_OUTPUT, "printed JSON that is not an object")
    return result


async def invoke(binary: Path, env: dict[str, str], conf: Json | None, command: str, timeout: float) -> Json | None:
    """Run one plugin with `conf` on stdin; its parsed result."""
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd="/",
    )
    stdin = json.dumps(conf).encode() if conf is not None else b""
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise CniError(binary.name, command, CODE_TIMEOUT, f"no answer within {timeout:g}s") from None
    return parse_output(binary.name, command, proc.returncode or 0, stdout, stderr)


class CniChain:
    """Runs ADD, CHECK, DEL and VERSION of one conflist. Stateless: the caller keeps the result."""

    def __init__(self, net: NetworkList, paths: tuple[str, ...], timeout: float = 60.0):
        self.net = net
        self.paths = paths
        self.timeout = timeout

    async def _call(self, index: int, command: str, att: Attachment, prev: Json | None) -> Json | None:
        plugin_type = self.net.plugins[index]["type"]
        binary = find_plugin(plugin_type, self.paths)
        conf = plugin_config(self.net, index, prev)
        env = plugin_env(command, Attachment(att.container_id, att.netns, att.ifname, att.args, self.paths))
        return await invoke(binary, env, conf, command, self.timeout)

    async def add(self, att: Attachment) -> Json:
        """ADD through the whole list; the final result (to cache for CHECK and DEL)."""
        result: Json | None = None
        for index in order(self.net, ADD):
            out = await self._call(index, ADD, att, result)
            if out is None:
                # A chained plugin must print a result (spec: "must output a result"); an empty one
                # would break the next plugin, so this is the plugin's bug, reported as such.
                plugin = self.net.plugins[index]["type"]
                raise CniError(
                    plugin, ADD, CODE_BAD_OUTPUT, "printed no result (a chained plugin must echo prevResult)"
                )
            result = out
        assert result is not None
        return result

    async def check(self, att: Attachment, cached: Json) -> None:
        """CHECK every plugin, in order, against the cached result; raises the first CniError."""
        for index in order(self.net, CHECK):
            await self._call(index, CHECK, att, cached)

    async def delete(self, att: Attachment, cached: Json | None) -> list[CniError]:
        """DEL every plugin, in reverse order, with the cached result.

        libcni stops at the first failing plugin and lets the kubelet retry; a runtime that then
        forgets the pod would leak what the remaining plugins hold (an IP in host-local), so every
        plugin is called and the failures are returned together.
        """
        prev = cached if passes_cached_result(self.net.cni_version) else None
        errors: list[CniError] = []
        for index in order(self.net, DEL):
            try:
                await self._call(index, DEL, att, prev)
            except CniError as e:
                log.warning("%s", e, extra={"container_id": att.container_id})
                errors.append(e)
        return errors

    async def version(self, plugin_type: str) -> Json:
        """`CNI_COMMAND=VERSION` of one plugin: its supported spec versions."""
        binary = find_plugin(plugin_type, self.paths)
        env = plugin_env(VERSION, Attachment("", "", paths=self.paths))
        out = await invoke(binary, env, {"cniVersion": self.net.cni_version}, VERSION, self.timeout)
        return out or {}
