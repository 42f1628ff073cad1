"""The runtime side of CNI as data: each plugin's stdin configuration and environment.

This mirrors what libcni (containerd, CRI-O) does with a network configuration list (CNI spec
1.0, "Network configuration lists" and "Section 4: Plugin delegation"):
- `name` and `cniVersion` of the list are copied into each plugin's configuration;
- ADD runs the plugins in list order, each getting the previous plugin's result as `prevResult`;
- DEL runs them in reverse order and CHECK in list order, both with the cached final ADD result as
  `prevResult` (from version 0.4.0), so that result must be kept per attachment;
- the environment is clean: only `CNI_*` and `PATH`.
No I/O here; `cni.py` executes what this module builds.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]
ADD, DEL, CHECK, VERSION = "ADD", "DEL", "CHECK", "VERSION"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class CniConfigError(ValueError):
    """The conflist is not usable; the message names the field."""


@dataclass(frozen=True)
class NetworkList:
    """A parsed conflist: its name, version and plugin configurations (in order)."""

    name: str
    cni_version: str
    plugins: tuple[Json, ...]

    @classmethod
    def from_json(cls, obj: Json) -> NetworkList:
        """Validate the parts the runtime relies on (the plugins validate their own fields)."""
        if not isinstance(obj, dict):
            raise CniConfigError("a conflist must be a JSON object")
        name, version, plugins = obj.get("name"), obj.get("cniVersion"), obj.get("plugins")
        if not isinstance(name, str) or not name:
            raise CniConfigError("conflist.name: required (a non-empty string)")
        if not isinstance(version, str) or not version:
            raise CniConfigError('conflist.cniVersion: required (e.g. "1.0.0")')
        if not isinstance(plugins, list) or not plugins:
            raise CniConfigError("conflist.plugins: required (a non-empty list)")
        for i, plugin in enumerate(plugins):
            if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str) or not plugin["type"]:
                raise CniConfigError(f"conflist.plugins[{i}].type: required (the plugin executable's name)")
        return cls(name, version, tuple(copy.deepcopy(plugins)))

    def to_json(self) -> Json:
        return {"cniVersion": self.cni_version, "name": self.name, "plugins": copy.deepcopy(list(self.plugins))}

    def types(self) -> list[str]:
        return [p["type"] for p in self.plugins]


@dataclass(frozen=True)
class Attachment:
    """One pod's attachment to the network: the runtime parameters of every plugin call for it."""

    container_id: str
    netns: str
    ifname: str = "eth0"
    args: tuple[tuple[str, str], ...] = ()
    paths: tuple[str, ...] = ()


def pod_args(namespace: str, name: str, uid: str) -> tuple[tuple[str, str], ...]:
    """`CNI_ARGS` as the kubelet passes them (docs/cluster.md), `IgnoreUnknown` first."""
    return (
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", namespace),
        ("K8S_POD_NAME", name),
        ("K8S_POD_INFRA_CONTAINER_ID", uid),
        ("K8S_POD_UID", uid),
    )


def format_args(args: Iterable[tuple[str, str]]) -> str:
    return ";".join(f"{k}={v}" for k, v in args)


def plugin_env(command: str, att: Attachment) -> dict[str, str]:
    """The complete environment of one plugin call (nothing inherited from the runtime)."""
    env = {"CNI_COMMAND": command, "CNI_PATH": ":".join(att.paths), "PATH": DEFAULT_PATH}
    if command == VERSION:
        return env
    env.update(
        CNI_CONTAINERID=att.container_id,
        CNI_NETNS=att.netns,
        CNI_IFNAME=att.ifname,
        CNI_ARGS=format_args(att.args),
    )
    return env


def plugin_config(net: NetworkList, index: int, prev_result: Json | None) -> Json:
    """The stdin of plugin `index`: its own configuration plus the list's name and version, and
    `prevResult` when there is one (libcni's buildOneConfig)."""
    conf = copy.deepcopy(net.plugins[index])
    conf["name"] = net.name
    conf["cniVersion"] = net.cni_version
    if prev_result is not None:
        conf["prevResult"] = copy.deepcopy(prev_result)
    else:
        conf.pop("prevResult", None)
    return conf


def order(net: NetworkList, command: str) -> list[int]:
    """Plugin indexes in the order `command` visits them: DEL in reverse, the others forward."""
    indexes = list(range(len(net.plugins)))
    return indexes[::-1] if command == DEL else indexes


def passes_cached_result(cni_version: str) -> bool:
    """DEL and CHECK carry the cached result as prevResult from spec 0.4.0 on."""
    try:
        parts = tuple(int(x) for x in cni_version.split(".")[:3])
    except ValueError:
        return True
    return parts >= (0, 4, 0)


def with_route_gateways(net: NetworkList) -> tuple[NetworkList, list[str]]:
    """Give every IPAM route of a `bridge` plugin an explicit `gw`.

    The bridge plugin of containernetworking-plugins 1.1.1 (Debian's) fails CHECK when an IPAM
    route has no gateway, although ADD installs such a route through the range's gateway anyway.
    Writing that same gateway explicitly changes nothing on ADD and lets CHECK pass. Returns the
    adjusted list and one note per route changed (for the log).
    """
    notes: list[str] = []
    plugins = []
    for plugin in net.plugins:
        plugin = copy.deepcopy(plugin)
        ipam = plugin.get("ipam") if plugin.get("type") == "bridge" else None
        if isinstance(ipam, dict) and isinstance(ipam.get("routes"), list):
            gateways = _range_gateways(ipam)
            for route in ipam["routes"]:
                if isinstance(route, dict) and route.get("dst") and not route.get("gw"):
                    gw = _gateway_for(route["dst"], gateways)
                    if gw:
                        route["gw"] = gw
                        notes.append(f"route {route['dst']}: added gw {gw} (bridge CHECK needs it)")
        plugins.append(plugin)
    return NetworkList(net.name, net.cni_version, tuple(plugins)), notes


def _range_gateways(ipam: Json) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The gateway of each host-local range: explicit, or the subnet's first address."""
    ranges: list[Json] = []
    for range_set in ipam.get("ranges") or []:
        ranges.extend(r for r in range_set if isinstance(r, dict))
    if ipam.get("subnet"):
        ranges.append({"subnet": ipam["subnet"], "gateway": ipam.get("gateway")})
    gateways = []
    for r in ranges:
        try:
            subnet = ipaddress.ip_network(r["subnet"], strict=False)
            gateways.append(ipaddress.ip_address(r["gateway"]) if r.get("gateway") else subnet[1])
        except (KeyError, ValueError, IndexError):
            continue
    return gateways


def _gateway_for(dst: str, gateways: list) -> str | None:
    try:
        version = ipaddress.ip_network(dst, strict=False).version
    except ValueError:
        return None
    return next((str(g) for g in gateways if g.version == version), None)


def pod_ips(result: Json) -> list[str]:
    """The pod's addresses in a CNI result: IPs on an interface inside the sandbox (or, when the
    result does not say, every IP), without their prefix length."""
    interfaces = result.get("interfaces") or []
    ips = []
    for entry in result.get("ips") or []:
        index = entry.get("interface")
        in_sandbox = index is None or (
            isinstance(index, int) and 0 <= index < len(interfaces) and interfaces[index].get("sandbox")
        )
        if in_sandbox and entry.get("address"):
            ips.append(entry["address"].split("/")[0])
    return ips
