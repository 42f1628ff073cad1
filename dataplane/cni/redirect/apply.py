"""Applying the redirection rules inside a pod's netns: inspect, install, remove (all idempotent).

Every command runs as `nsenter --net=PATH -- …`, so any netns path works (a name under
/var/run/netns, or /proc/PID/ns/net). Installing reads what is there first and writes only what
differs in one `iptables-restore --noflush` transaction, so a pod whose rules are right sees no
change at all (no rule is deleted and re-added) and a half-installed pod converges atomically.
These functions block (they run processes): call them from a worker thread in asyncio code.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from .iptables_state import Installed, parse_save, plan_install, plan_ip_install, plan_ip_remove, plan_remove
from .rules import RuleSet

log = logging.getLogger("mesh.cni.redirect")
_SEPARATOR = "@@mesh-redirect@@"
TIMEOUT_SECONDS = 10.0


class RedirectError(RuntimeError):
    """A command inside the pod's netns failed; the message names the netns and the command."""


def _run(netns: str | Path, argv: list[str], stdin: str | None = None) -> str:
    command = ["nsenter", f"--net={netns}", "--", *argv]
    try:
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise RedirectError(f"{netns}: {' '.join(argv)} timed out after {TIMEOUT_SECONDS}s") from None
    if result.returncode != 0:
        raise RedirectError(f"{netns}: {' '.join(argv)} failed: {result.stderr.strip() or result.returncode}")
    return result.stdout


def inspect(netns: str | Path, ruleset: RuleSet) -> Installed:
    """Read the netns's iptables, policy rules and route table (one process round-trip)."""
    table = ruleset.ip_route.table
    # A route table that was never used does not exist yet: `ip route show` then fails.
    script = (
        f"iptables-save && echo {_SEPARATOR} && ip -4 rule show && echo {_SEPARATOR} && "
        f"{{ ip -4 route show table {table} 2>/dev/null || true; }}"
    )
    out = _run(netns, ["sh", "-c", script])
    saved, rules, routes = [*out.split(_SEPARATOR + "\n"), "", ""][:3]
    return Installed(
        tables=parse_save(saved),
        ip_rules=tuple(line.rstrip() for line in rules.splitlines() if line.strip()),
        ip_routes=tuple(line.rstrip() for line in routes.splitlines() if line.strip()),
    )


def install(netns: str | Path, ruleset: RuleSet, installed: Installed | None = None) -> bool:
    """Make the netns hold exactly `ruleset`; returns whether anything had to change."""
    state = installed if installed is not None else inspect(netns, ruleset)
    restore = plan_install(ruleset, state)
    ip_commands = plan_ip_install(ruleset, state)
    # Routing first: once the REDIRECT rules exist, ztunnel's spoofed replies need the route.
    for argv in ip_commands:
        _run(netns, argv)
    if restore is not None:
        _run(netns, ["iptables-restore", "--noflush"], stdin=restore)
    changed = restore is not None or bool(ip_commands)
    if changed:
        log.debug("redirection installed", extra={"netns": str(netns)})
    return changed


def remove(netns: str | Path, ruleset: RuleSet, installed: Installed | None = None) -> bool:
    """Take every rule, chain, policy rule and route of ours out; returns whether any was there."""
    state = installed if installed is not None else inspect(netns, ruleset)
    restore = plan_remove(state)
    ip_commands = plan_ip_remove(ruleset, state)
    # Rules first, so no new connection is redirected while the routing goes away.
    if restore is not None:
        _run(netns, ["iptables-restore", "--noflush"], stdin=restore)
    for argv in ip_commands:
        _run(netns, argv)
    return restore is not None or bool(ip_commands)
