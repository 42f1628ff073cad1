"""What is installed in a pod's netns, and how to get from there to what should be (pure).

`parse_save` reads `iptables-save` output; `Installed` bundles it with the `ip rule` / `ip route`
listings. `differences` says what is wrong (empty: in sync), `plan_install` writes the
`iptables-restore --noflush` input that converges in one atomic transaction touching only the
chains that differ, and `plan_remove` the one that takes everything of ours out. The `ip`
counterparts return argv lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .rules import HOOKS, TABLES, RuleSet, jump_line


@dataclass(frozen=True)
class TableState:
    """One table of `iptables-save`: declared chains and each chain's rule lines, in order."""

    chains: frozenset[str] = frozenset()
    rules: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def lines(self, chain: str) -> tuple[str, ...]:
        return self.rules.get(chain, ())


@dataclass(frozen=True)
class Installed:
    """A snapshot of the redirection state of one netns."""

    tables: dict[str, TableState]
    ip_rules: tuple[str, ...] = ()  # `ip -4 rule show`, one line each
    ip_routes: tuple[str, ...] = ()  # `ip -4 route show table N`, one line each

    def table(self, name: str) -> TableState:
        return self.tables.get(name, TableState())

    def has_any(self, ruleset: RuleSet) -> bool:
        """Whether anything of ours is present (the pod was captured, maybe partially)."""
        ours = {chain for chain, _hook in HOOKS}
        if any(ours & self.table(t).chains for t in TABLES):
            return True
        return ruleset.ip_rule.show_line() in self.ip_rules


def parse_save(text: str) -> dict[str, TableState]:
    """Parse `iptables-save` output into tables (comments and counters are ignored)."""
    tables: dict[str, TableState] = {}
    current: str | None = None
    chains: set[str] = set()
    rules: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            current, chains, rules = line[1:], set(), {}
        elif line == "COMMIT" and current is not None:
            tables[current] = TableState(frozenset(chains), {c: tuple(r) for c, r in rules.items()})
            current = None
        elif line.startswith(":") and current is not None:
            chains.add(line[1:].split()[0])
        elif line.startswith("-A ") and current is not None:
            chain = line.split()[1]
            rules.setdefault(chain, []).append(line)
    return tables


def _jump_count(table: TableState, chain: str, hook: str) -> int:
    return table.lines(hook).count(jump_line(chain, hook))


def differences(desired: RuleSet, installed: Installed) -> list[str]:
    """Human-readable differences between desired and installed; empty when in sync."""
    out: list[str] = []
    for table in TABLES:
        state = installed.table(table)
        for chain, rules in desired.chains(table).items():
            if chain not in state.chains:
                out.append(f"{table}: chain {chain} missing")
            elif list(state.lines(chain)) != rules:
                out.append(f"{table}: chain {chain} differs")
        for chain, hook in HOOKS:
            count = _jump_count(state, chain, hook)
            if count != 1:
                out.append(f"{table}: {hook} jumps to {chain} {count} times")
    rule_count = installed.ip_rules.count(desired.ip_rule.show_line())
    if rule_count != 1:
        out.append(f"ip rule {desired.ip_rule.show_line()!r} present {rule_count} times")
    if desired.ip_route.show_line() not in installed.ip_routes:
        out.append(f"route {desired.ip_route.show_line()!r} missing from table {desired.ip_route.table}")
    return out


def _table_install(table: str, desired: RuleSet, state: TableState) -> list[str]:
    """Restore lines fixing one table, or [] when it is already right (same layout as
    `rules.render_restore`: chain declarations, jumps, then the chains' rules)."""
    declared: list[str] = []
    refilled: list[str] = []
    for chain, rules in desired.chains(table).items():
        if chain not in state.chains or list(state.lines(chain)) != rules:
            # Declaring a chain creates it, or flushes it under --noflush; then refill it.
            declared.append(f":{chain} - [0:0]")
            refilled += rules
    jumps: list[str] = []
    for chain, hook in HOOKS:
        count = _jump_count(state, chain, hook)
        if count == 0:
            jumps.append(jump_line(chain, hook))
        jumps += [f"-D {hook} -j {chain}"] * max(count - 1, 0)
    if not (declared or jumps):
        return []
    return [f"*{table}", *declared, *jumps, *refilled, "COMMIT"]


def plan_install(desired: RuleSet, installed: Installed) -> str | None:
    """`iptables-restore --noflush` input converging to `desired`, or None when nothing differs."""
    lines: list[str] = []
    for table in TABLES:
        lines += _table_install(table, desired, installed.table(table))
    return "\n".join(lines) + "\n" if lines else None


def plan_remove(installed: Installed) -> str | None:
    """`iptables-restore --noflush` input deleting our jumps and chains, or None when none exist."""
    lines: list[str] = []
    for table in TABLES:
        state = installed.table(table)
        body: list[str] = []
        for chain, hook in HOOKS:
            body += [f"-D {hook} -j {chain}"] * _jump_count(state, chain, hook)
        present = [chain for chain, _hook in HOOKS if chain in state.chains]
        body += [f"-F {chain}" for chain in present]
        body += [f"-X {chain}" for chain in present]
        if body:
            lines += [f"*{table}", *body, "COMMIT"]
    return "\n".join(lines) + "\n" if lines else None


def plan_ip_install(desired: RuleSet, installed: Installed) -> list[list[str]]:
    """`ip` commands converging the policy routing (nothing when it is right)."""
    commands: list[list[str]] = []
    count = installed.ip_rules.count(desired.ip_rule.show_line())
    if count == 0:
        commands.append(desired.ip_rule.add_command())
    commands += [desired.ip_rule.del_command()] * max(count - 1, 0)
    if desired.ip_route.show_line() not in installed.ip_routes:
        commands.append(desired.ip_route.add_command())
    return commands


def plan_ip_remove(desired: RuleSet, installed: Installed) -> list[list[str]]:
    """`ip` commands removing our policy rule and route (nothing when neither is there)."""
    commands = [desired.ip_rule.del_command()] * installed.ip_rules.count(desired.ip_rule.show_line())
    if desired.ip_route.show_line() in installed.ip_routes:
        route = desired.ip_route
        commands.append(["ip", "-4", "route", "del", "local", route.dst, "dev", route.dev, "table", str(route.table)])
    return commands
