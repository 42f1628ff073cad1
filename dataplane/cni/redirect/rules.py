"""The in-pod redirection rules as data, following Istio's REDIRECT mode.

Pure: `build(config)` returns a `RuleSet`; `render_restore` turns it into `iptables-restore` input
and `render_ip_commands` into the `ip` commands for the policy route. Nothing here runs a command.

The rules mirror istio/istio cni/pkg/iptables/iptables.go (testdata/default.golden), minus the DNS
capture (there is no DNS proxy yet) and with the probe exemption only when a probe SNAT address is
configured (the host-side SNAT that makes it meaningful is not installed by this agent):

- mangle PREROUTING: packets carrying ztunnel's mark get the connmark 0x111, and mangle OUTPUT
  restores the mark from that connmark, so replies to connections ztunnel opened with a spoofed
  source are routed back to the local stack (`ip rule fwmark 0x111/0xfff lookup 100`, table 100
  holding `local 0.0.0.0/0 dev lo`).
- nat PREROUTING: inbound TCP not to 127.0.0.1, not to the HBONE port and not from ztunnel is
  REDIRECTed to the inbound plaintext port (15006).
- nat OUTPUT: connmarked TCP and traffic through `lo` (not to 127.0.0.1) pass; other TCP not to
  127.0.0.1 and not from ztunnel is REDIRECTed to the outbound port (15001).

Every rule is written exactly as `iptables-save` prints it, so what is installed can be compared
with what is desired line by line.
"""

from __future__ import annotations

from dataclasses import dataclass

PRERT_CHAIN = "ISTIO_PRERT"
OUTPUT_CHAIN = "ISTIO_OUTPUT"
TABLES = ("mangle", "nat")
# Our chains and the built-in chain each is jumped to from.
HOOKS = ((PRERT_CHAIN, "PREROUTING"), (OUTPUT_CHAIN, "OUTPUT"))


@dataclass(frozen=True, kw_only=True)
class RedirectConfig:
    """The numbers the rules are built from; the defaults are Istio's."""

    proxy_mark: int = 0x539  # SO_MARK on every socket ztunnel opens (1337)
    connmark: int = 0x111  # connections ztunnel made (spoofed sources) are routed back locally
    mark_mask: int = 0xFFF
    route_table: int = 100
    rule_pref: int = 32764
    outbound_port: int = 15001
    inbound_port: int = 15006
    hbone_port: int = 15008
    probe_snat_ip: str | None = None  # Istio's 169.254.7.127 when the host SNATs kubelet probes

    def mark(self, value: int) -> str:
        return f"{value:#x}/{self.mark_mask:#x}"


@dataclass(frozen=True)
class Rule:
    """One rule appended to `chain` of `table`; `spec` is everything after `-A CHAIN`."""

    table: str
    chain: str
    spec: str

    def line(self) -> str:
        """The rule as `iptables-save` prints it (and `iptables-restore` reads it)."""
        return f"-A {self.chain} {self.spec}"


@dataclass(frozen=True)
class IpRule:
    """`ip -4 rule add fwmark MARK pref PREF lookup TABLE`."""

    fwmark: str
    pref: int
    table: int

    def add_command(self) -> list[str]:
        return ["ip", "-4", "rule", "add", "fwmark", self.fwmark, "pref", str(self.pref), "lookup", str(self.table)]

    def del_command(self) -> list[str]:
        return ["ip", "-4", "rule", "del", "fwmark", self.fwmark, "pref", str(self.pref), "lookup", str(self.table)]

    def show_line(self) -> str:
        """How `ip -4 rule show` prints it."""
        return f"{self.pref}:\tfrom all fwmark {self.fwmark} lookup {self.table}"


@dataclass(frozen=True)
class IpRoute:
    """`ip -4 route replace local DST dev DEV table TABLE`."""

    dst: str
    dev: str
    table: int

    def add_command(self) -> list[str]:
        return ["ip", "-4", "route", "replace", "local", self.dst, "dev", self.dev, "table", str(self.table)]

    def show_line(self) -> str:
        """How `ip -4 route show table TABLE` prints it."""
        dst = "default" if self.dst == "0.0.0.0/0" else self.dst
        return f"local {dst} dev {self.dev} scope host"


@dataclass(frozen=True)
class RuleSet:
    """Everything installed in one pod's netns."""

    rules: tuple[Rule, ...]
    ip_rule: IpRule
    ip_route: IpRoute

    def chains(self, table: str) -> dict[str, list[str]]:
        """Our chains of `table` with their rule lines, in order."""
        out: dict[str, list[str]] = {chain: [] for chain, _hook in HOOKS}
        for rule in self.rules:
            if rule.table == table:
                out[rule.chain].append(rule.line())
        return out


def _mangle(c: RedirectConfig) -> list[Rule]:
    return [
        Rule(
            "mangle",
            PRERT_CHAIN,
            f"-m mark --mark {c.mark(c.proxy_mark)} -j CONNMARK --set-xmark {c.mark(c.connmark)}",
        ),
        Rule(
            "mangle",
            OUTPUT_CHAIN,
            f"-m connmark --mark {c.mark(c.connmark)} "
            "-j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff",
        ),
    ]


def _nat_prerouting(c: RedirectConfig) -> list[Rule]:
    rules = []
    if c.probe_snat_ip:
        rules.append(Rule("nat", PRERT_CHAIN, f"-s {c.probe_snat_ip}/32 -p tcp -m tcp -j ACCEPT"))
    rules.append(
        Rule(
            "nat",
            PRERT_CHAIN,
            f"! -d 127.0.0.1/32 -p tcp -m tcp ! --dport {c.hbone_port} -m mark ! --mark {c.mark(c.proxy_mark)} "
            f"-j REDIRECT --to-ports {c.inbound_port}",
        )
    )
    return rules


def _nat_output(c: RedirectConfig) -> list[Rule]:
    rules = []
    if c.probe_snat_ip:
        rules.append(Rule("nat", OUTPUT_CHAIN, f"-d {c.probe_snat_ip}/32 -p tcp -m tcp -j ACCEPT"))
    rules += [
        Rule("nat", OUTPUT_CHAIN, f"-p tcp -m mark --mark {c.mark(c.connmark)} -j ACCEPT"),
        Rule("nat", OUTPUT_CHAIN, "! -d 127.0.0.1/32 -o lo -j ACCEPT"),
        Rule(
            "nat",
            OUTPUT_CHAIN,
            f"! -d 127.0.0.1/32 -p tcp -m mark ! --mark {c.mark(c.proxy_mark)} "
            f"-j REDIRECT --to-ports {c.outbound_port}",
        ),
    ]
    return rules


def build(config: RedirectConfig | None = None) -> RuleSet:
    """The rule set for one pod (the same for every pod of a node)."""
    c = config or RedirectConfig()
    return RuleSet(
        rules=tuple(_mangle(c) + _nat_prerouting(c) + _nat_output(c)),
        ip_rule=IpRule(c.mark(c.connmark), c.rule_pref, c.route_table),
        ip_route=IpRoute("0.0.0.0/0", "lo", c.route_table),
    )


def jump_line(chain: str, hook: str) -> str:
    """The rule that sends a built-in chain's packets through ours."""
    return f"-A {hook} -j {chain}"


def render_restore(ruleset: RuleSet) -> str:
    """`iptables-restore --noflush` input installing the rule set into a netns that has none of it.

    Declaring a chain (`:NAME - [0:0]`) creates it, or flushes it when it exists; the jumps are
    appended once. Converging from a partial install is `iptables_state.plan_install`'s job.
    """
    lines: list[str] = []
    for table in TABLES:
        chains = ruleset.chains(table)
        lines.append(f"*{table}")
        lines += [f":{chain} - [0:0]" for chain in chains]
        lines += [jump_line(chain, hook) for chain, hook in HOOKS]
        for rules in chains.values():
            lines += rules
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def render_ip_commands(ruleset: RuleSet) -> list[list[str]]:
    """The `ip` commands that add the policy routing for connmarked traffic."""
    return [ruleset.ip_rule.add_command(), ruleset.ip_route.add_command()]
