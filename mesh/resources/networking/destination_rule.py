"""DestinationRule (networking.istio.io/v1): traffic policy for a host and its subsets - load
balancing, connection pools, outlier detection, client TLS - with the rules of Istio's
ValidateDestinationRule.
"""

from __future__ import annotations

from ..base import Cause, Labels, Model, duplicate, forbidden, invalid
from ..kind import Column, ResourceKind, age, jsonpath
from ..meta import IstioStatus, KubeObject
from .checks import (
    check_export_to,
    check_selector_labels,
    dns_label_ok,
    required_because,
    wildcard_domain_error,
)
from .common import CATEGORIES, GROUP, VERSION, Json, WorkloadSelector, namespace_of
from .traffic_policy import TrafficPolicy, check_traffic_policy

# --- subsets and the spec ----------------------------------------------------------------------


class Subset(Model):
    """A named group of the host's endpoints, selected by labels."""

    name: str
    labels: Labels | None = None
    traffic_policy: TrafficPolicy | None = None


class DestinationRuleSpec(Model):
    """What happens to traffic once routing has chosen `host`."""

    host: str
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] | None = None
    export_to: list[str] | None = None
    workload_selector: WorkloadSelector | None = None


class DestinationRule(KubeObject):
    """A DestinationRule object."""

    spec: DestinationRuleSpec
    status: IstioStatus | None = None


# --- rules ---------------------------------------------------------------------------------------


def _host_causes(host: str) -> list[Cause]:
    if not host:
        return [required_because("spec.host", "the host the rule applies to is required")]
    problem = wildcard_domain_error(host)
    return [invalid("spec.host", host, problem)] if problem else []


def _subset_causes(subsets: list[Subset], namespace: str) -> list[Cause]:
    causes: list[Cause] = []
    seen: set[str] = set()
    for i, subset in enumerate(subsets):
        path = f"spec.subsets[{i}]"
        if subset.name in seen:
            causes.append(duplicate(f"{path}.name", subset.name))
        seen.add(subset.name)
        if not subset.name:
            causes.append(required_because(f"{path}.name", "a subset needs a name"))
        elif not dns_label_ok(subset.name):
            causes.append(invalid(f"{path}.name", subset.name, "a subset name must be a DNS label"))
        causes += check_traffic_policy(f"{path}.trafficPolicy", subset.traffic_policy, namespace)
    return causes


def _selector_export_causes(spec: DestinationRuleSpec, namespace: str) -> list[Cause]:
    # A rule scoped to some workloads only makes sense in the namespace of those workloads.
    entries = {namespace if e == "." else e for e in spec.export_to or []}
    if spec.workload_selector is None or not entries:
        return []
    if namespace not in entries:
        return [forbidden("spec.exportTo", "a rule with a workloadSelector cannot be exported beyond its namespace")]
    if len(entries) > 1:
        return [forbidden("spec.exportTo", "a rule with a workloadSelector cannot have several exportTo entries")]
    return []


def check_destination_rule(obj: Json, model: DestinationRule) -> list[Cause]:
    """The rules of Istio's ValidateDestinationRule, each reported at its field."""
    spec = model.spec
    namespace = namespace_of(obj)
    causes = _host_causes(spec.host)
    causes += check_traffic_policy("spec.trafficPolicy", spec.traffic_policy, namespace)
    causes += _subset_causes(spec.subsets or [], namespace)
    causes += check_export_to("spec.exportTo", spec.export_to, namespace)
    causes += _selector_export_causes(spec, namespace)
    if spec.workload_selector is not None:
        causes += check_selector_labels("spec.workloadSelector.matchLabels", spec.workload_selector.match_labels)
    return causes


DESTINATION_RULE = ResourceKind(
    group=GROUP,
    version=VERSION,
    kind="DestinationRule",
    plural="destinationrules",
    namespaced=True,
    model=DestinationRule,
    short_names=("dr",),
    categories=CATEGORIES,
    status_subresource=True,
    columns=(
        Column("Name", jsonpath(".metadata.name"), format="name"),
        Column("Host", jsonpath(".spec.host"), description="The name of a service from the service registry"),
        age(),
    ),
    check=check_destination_rule,
)
