"""A pod's network sandbox: its named netns and its attachment through the CNI chain.

Set-up is what a CRI runtime does for a pod sandbox: create the netns, bring its loopback up
(containerd does it with the `loopback` plugin, outside the conflist), then CNI ADD. Tear-down is
CNI DEL with the cached result, then the netns is deleted. Both are safe to repeat.
The few `ip` commands run synchronously (milliseconds): no worker threads exist when container
processes are forked with a `preexec_fn`.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

from mesh import netns
from mesh.names import CLUSTER_DOMAIN

from .cni import CniChain, CniError
from .cni_config import Attachment, CniConfigError, NetworkList, pod_args, with_route_gateways

log = logging.getLogger("mesh-runtime.sandbox")
Json = dict[str, Any]


class SandboxError(Exception):
    """The pod's network could not be set up; the message is shown in the container statuses."""


def private_mount_namespace() -> str | None:
    """Why netns created here would be invisible to other processes, or None when they are not.

    `ip netns exec` runs its command in a new mount namespace that is a *slave* of the original:
    a netns created inside (a bind mount under /run/netns) never reaches the other node processes,
    nor this runtime after a restart. Such a mount shows `master:N` in /proc/self/mountinfo.
    """
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 6 and fields[4] in ("/run/netns", "/var/run/netns"):
            optional = fields[6 : fields.index("-")]
            if any(f.startswith("master:") for f in optional):
                return (
                    f"{fields[4]} is a slave mount here (a private mount namespace, as `ip netns exec` makes): pod "
                    "network namespaces created by this process would be invisible to mesh-node-agent and to a "
                    "restarted mesh-runtime; enter only the node's network namespace instead "
                    "(`nsenter --net=/var/run/netns/NODE mesh-runtime ...`)"
                )
    return None


def load_network(path: Path) -> NetworkList:
    """The conflist at `path`, with explicit route gateways (see `with_route_gateways`)."""
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise CniConfigError(f"cannot read the CNI conflist {path}: {e.strerror}") from None
    except ValueError as e:
        raise CniConfigError(f"{path}: not JSON ({e})") from None
    net, notes = with_route_gateways(NetworkList.from_json(raw))
    for note in notes:
        log.info("conflist %s: %s", path, note)
    return net


def attachment(uid: str, namespace: str, name: str, netns_name: str, paths: tuple[str, ...]) -> Attachment:
    """docs/cluster.md: CNI_CONTAINERID is the pod uid, CNI_NETNS its /var/run/netns path."""
    return Attachment(
        container_id=uid,
        netns=str(netns.path(netns_name)),
        ifname="eth0",
        args=pod_args(namespace, name, uid),
        paths=paths,
    )


def _create_netns(name: str) -> None:
    netns.create(name)
    result = subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], capture_output=True, text=True)
    if result.returncode != 0:
        raise SandboxError(f"ip -n {name} link set lo up: {result.stderr.strip()}")


async def set_up(net: NetworkList, att: Attachment, netns_name: str, timeout: float) -> Json:
    """Create the netns and run CNI ADD; on failure undo both. The final CNI result."""
    try:
        _create_netns(netns_name)
    except (netns.NetnsError, OSError) as e:
        raise SandboxError(f"creating netns {netns_name}: {e}") from None
    chain = CniChain(net, att.paths, timeout)
    try:
        return await chain.add(att)
    except (CniError, OSError) as e:
        # The kubelet tears a half-made sandbox down before retrying; so do we, so a plugin that
        # did its part (an IP taken by host-local) does not keep it.
        await chain.delete(att, None)
        netns.delete(netns_name)
        raise SandboxError(f"failed to set up the pod network: {e}") from None


async def check(net: NetworkList, att: Attachment, cached: Json, timeout: float) -> str | None:
    """CNI CHECK against the cached result; the problem, or None when the network is intact."""
    try:
        await CniChain(net, att.paths, timeout).check(att, cached)
    except (CniError, OSError) as e:
        return str(e)
    return None


async def tear_down(
    net: NetworkList | None, att: Attachment, netns_name: str, cached: Json | None, timeout: float
) -> list[str]:
    """CNI DEL (every plugin, reverse order) then delete the netns; the problems met, if any."""
    problems: list[str] = []
    if net is not None:
        errors = await CniChain(net, att.paths, timeout).delete(att, cached)
        problems.extend(str(e) for e in errors)
    try:
        netns.delete(netns_name)
    except (netns.NetnsError, OSError) as e:
        problems.append(f"deleting netns {netns_name}: {e}")
    return problems


def resolv_conf(result: Json, namespace: str, domain: str = CLUSTER_DOMAIN) -> str | None:
    """The pod's resolv.conf, as the kubelet writes one (dnsPolicy ClusterFirst): the node's name
    server, which ztunnel runs on the pod's gateway (docs/ztunnel.md, "Names"), the search list of
    the pod's namespace and `ndots:5`. None when the CNI result names no IPv4 gateway."""
    gateways = [ip["gateway"] for ip in result.get("ips", []) if ip.get("gateway") and ":" not in ip["gateway"]]
    if not gateways:
        return None
    search = f"{namespace}.svc.{domain} svc.{domain} {domain}"
    return f"nameserver {gateways[0]}\nsearch {search}\noptions ndots:5\n"


def write_resolv_conf(netns_name: str, text: str) -> None:
    """Where `ip netns exec` and the pod's processes (netns.enter_in_child) find it:
    /etc/netns/NAME/resolv.conf, bind-mounted over /etc/resolv.conf for them only."""
    directory = netns.ETC_NETNS_DIR / netns_name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "resolv.conf").write_text(text)
