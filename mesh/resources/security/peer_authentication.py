"""PeerAuthentication (security.istio.io/v1): the mTLS mode workloads accept, per port if asked."""

from __future__ import annotations

from typing import Literal

from ..base import Cause, Model, forbidden, invalid
from ..kind import Column, jsonpath
from ..meta import IstioStatus, KubeObject
from .common import Json, WorkloadSelector, port_error, security_kind, selector_causes


class PeerMutualTLS(Model):
    """The mTLS mode; UNSET inherits from the parent scope (namespace, then mesh)."""

    mode: Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"] | None = None


class PeerAuthenticationSpec(Model):
    """istio.security.v1beta1.PeerAuthentication."""

    selector: WorkloadSelector | None = None
    mtls: PeerMutualTLS | None = None
    port_level_mtls: dict[str, PeerMutualTLS] | None = None


class PeerAuthentication(KubeObject):
    """A PeerAuthentication object."""

    spec: PeerAuthenticationSpec | None = None
    status: IstioStatus | None = None


def _peer_authentication_check(obj: Json, model: PeerAuthentication) -> list[Cause]:
    """istiod's ValidatePeerAuthentication and the CRD's CEL rules on portLevelMtls."""
    spec = model.spec
    if spec is None:
        return []
    causes = selector_causes(spec.selector)
    ports = spec.port_level_mtls
    if ports is None:
        return causes
    if not ports:
        causes.append(invalid("spec.portLevelMtls", {}, "must have at least one port when set"))
    elif not (spec.selector and spec.selector.match_labels):
        # Port numbers are workload ports, so a mesh- or namespace-wide policy cannot name them.
        causes.append(forbidden("spec.portLevelMtls", "requires a selector with matchLabels"))
    for port in ports:
        if port_error(port):
            causes.append(invalid(f"spec.portLevelMtls[{port}]", port, "port must be between 1-65535"))
    return causes


_MODE = Column("Mode", jsonpath(".spec.mtls.mode"), description="Defines the mTLS mode used for peer authentication.")
PEER_AUTHENTICATION = security_kind(PeerAuthentication, _peer_authentication_check, "peerauthentications", "pa", _MODE)
