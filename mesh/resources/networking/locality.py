"""Locality-aware load balancing of a DestinationRule (`loadBalancer.localityLbSetting`): the
schema and the rules of Istio's ValidateLocalityLbSetting.
"""

from __future__ import annotations

from pydantic import Field

from ..base import Cause, Model, forbidden, invalid
from .common import UInt32

# Failover already walks region, zone and subzone; naming them again as priorities conflicts.
_TOPOLOGY_LABELS = (
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
)


class LocalityDistribute(Model):
    """Traffic from locality `from` split across localities by weight."""

    from_: str | None = Field(default=None, alias="from")
    to: dict[str, UInt32] | None = None


class LocalityFailover(Model):
    """Where traffic of region `from` goes when its endpoints are unhealthy."""

    from_: str | None = Field(default=None, alias="from")
    to: str | None = None


class LocalityLoadBalancerSetting(Model):
    """Locality-weighted load balancing or failover."""

    distribute: list[LocalityDistribute] | None = None
    failover: list[LocalityFailover] | None = None
    failover_priority: list[str] | None = None
    enabled: bool | None = None


def check_locality_lb(path: str, setting: LocalityLoadBalancerSetting) -> list[Cause]:
    """Istio's ValidateLocalityLbSetting: distribute or failover, weights, locality patterns."""
    if setting.distribute and setting.failover:
        return [forbidden(f"{path}.failover", "may not be set together with distribute")]
    if setting.failover:
        for k, label in enumerate(setting.failover_priority or []):
            if label in _TOPOLOGY_LABELS:
                return [forbidden(f"{path}.failoverPriority[{k}]", "topology labels may not be used with failover")]
    for k, rule in enumerate(setting.distribute or []):
        causes = _distribute_causes(f"{path}.distribute[{k}]", rule)
        if causes:
            return causes
    problem = _localities_error([rule.from_ or "" for rule in setting.distribute or []])
    if problem:
        return [invalid(f"{path}.distribute", "", problem)]
    return _failover_causes(f"{path}.failover", setting.failover or [])


def _distribute_causes(path: str, rule: LocalityDistribute) -> list[Cause]:
    weights = rule.to or {}
    for locality, weight in weights.items():
        if not 1 <= weight <= 100:
            return [invalid(f"{path}.to.{locality}", weight, "a locality weight must be in the range 1..100")]
    if sum(weights.values()) != 100:
        return [invalid(f"{path}.to", sum(weights.values()), "the locality weights must add up to 100")]
    problem = _localities_error(list(weights))
    return [invalid(f"{path}.to", "", problem)] if problem else []


def _failover_causes(path: str, failover: list[LocalityFailover]) -> list[Cause]:
    causes = []
    for k, rule in enumerate(failover):
        source, target = rule.from_ or "", rule.to or ""
        if source == target:
            causes.append(invalid(f"{path}[{k}].to", target, "failover must go to a different region"))
        if "/" in source or "/" in target:
            causes.append(invalid(f"{path}[{k}]", f"{source} -> {target}", "failover names regions only"))
        if "*" in source or "*" in target:
            causes.append(invalid(f"{path}[{k}]", f"{source} -> {target}", "failover regions may not use '*'"))
    return causes


def _localities_error(localities: list[str]) -> str | None:
    """Why a list of `region[/zone[/subzone]]` patterns is unusable (None when it is fine).

    A trailing `*` matches the rest of the hierarchy; no pattern may cover another.
    """
    tree: dict[str, dict[str, set[str]]] = {}
    for locality in localities:
        stars = locality.count("*")
        if stars > 1 or (stars and not locality.endswith("*")):
            return f"locality {locality}: '*' may appear once, at the end"
        parts = locality.split("/", 2)
        if "*" in tree:
            return f"locality {locality} overlaps with a previous one"
        if "" in parts:
            return f"locality {locality} must not contain an empty region, zone or subzone"
        if not _add_locality(tree, parts):
            return f"locality {locality} overlaps with a previous one"
    return None


def _add_locality(tree: dict[str, dict[str, set[str]]], parts: list[str]) -> bool:
    """Insert a locality into the region → zone → subzones tree; False when it overlaps."""
    region = parts[0]
    if len(parts) == 1:
        if region in tree:
            return False
        tree[region] = {"*": {"*"}}
        return True
    zones = tree.setdefault(region, {})
    if "*" in zones:
        return False
    zone = parts[1]
    if len(parts) == 2:
        if zone in zones:
            return False
        zones[zone] = {"*"}
        return True
    subzones = zones.setdefault(zone, set())
    if "*" in subzones or parts[2] in subzones:
        return False
    subzones.add(parts[2])
    return True
