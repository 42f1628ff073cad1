"""The shape of `/config_dump` (istio/ztunnel: src/admin.rs), built from domain objects. Pure.

Top-level keys as ztunnel's: `workloads`, `services`, `policies`, `certificates` (identity, state,
`certChain` with PEM, serial, validity), plus what this ztunnel adds for `meshctl ztunnel-config`:
`connections` (open ones), `pods` (served from the node agent), `xds` (per type: resources, ACKs,
NACKs) and `config`. Names are camelCase, as ztunnel's JSON is.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from mesh.certs.certificate import Certificate
from mesh.certs.manager import CertificateStatus

from .state import GatewayAddress, NamespacedHostname, Policy, Service, Workload


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def plain(value: Any) -> Any:
    """Domain values as JSON: dataclasses as camelCase objects, IPs and networks as text, enums
    by value, mappings with text keys."""
    if isinstance(value, GatewayAddress):
        return gateway(value)
    if is_dataclass(value) and not isinstance(value, type):
        return {_camel(f.name): plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def gateway(address: GatewayAddress | None) -> str | None:
    """A waypoint as text: `ns/hostname` or `network/ip`, with its port."""
    if address is None:
        return None
    target = address.destination
    where = target.key if isinstance(target, NamespacedHostname) else str(target)
    return f"{where}:{address.hbone_mtls_port}"


def workload_json(workload: Workload) -> dict[str, Any]:
    out = plain(workload)
    out["identity"] = str(workload.identity)
    out["protocol"] = workload.tunnel_protocol.value
    return out


def service_json(service: Service, endpoints: Iterable[Workload]) -> dict[str, Any]:
    """A service and its endpoints (the workloads listing it), healthy or not."""
    out = plain(service)
    out["key"] = service.key
    out["vips"] = [str(v) for v in service.vips]
    out["endpoints"] = {
        w.uid: {"workloadUid": w.uid, "status": w.status.value, "ports": plain(w.services.get(service.key, {}))}
        for w in endpoints
    }
    return out


def services_json(services: Iterable[Service], workloads: Iterable[Workload]) -> list[dict[str, Any]]:
    by_service: dict[str, list[Workload]] = {}
    for workload in workloads:
        for key in workload.services:
            by_service.setdefault(key, []).append(workload)
    return [service_json(s, by_service.get(s.key, [])) for s in services]


def policy_json(policy: Policy) -> dict[str, Any]:
    out = plain(policy)
    out["key"] = policy.key
    return out


@dataclass(frozen=True)
class CertificateView:
    """What config_dump shows of one identity's certificate."""

    status: CertificateStatus
    certificate: Certificate | None


def rfc3339(moment: datetime) -> str:
    """UTC to the second with a `Z`, as ztunnel's dump and istioctl's columns write times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cert_entry(pem: str) -> dict[str, Any]:
    cert = x509.load_pem_x509_certificate(pem.encode())
    key = cert.public_key()
    algorithm = f"ECDSA {key.curve.name}" if isinstance(key, ec.EllipticCurvePublicKey) else type(key).__name__
    return {
        "pem": pem,
        "serialNumber": format(cert.serial_number, "x"),
        "validFrom": rfc3339(cert.not_valid_before_utc),
        "expirationTime": rfc3339(cert.not_valid_after_utc),
        "issuer": cert.issuer.rfc4514_string(),
        "keyAlgorithm": algorithm,
    }


def certificate_json(view: CertificateView) -> dict[str, Any]:
    """ztunnel's certificate entry: identity, state, the chain (leaf first) and the roots."""
    status, cert = view.status, view.certificate
    chain = [_cert_entry(pem) for pem in cert.chain] if cert is not None else []
    roots = [_cert_entry(pem) for pem in cert.roots] if cert is not None else []
    return {
        "identity": str(status.identity),
        "state": status.state.value,
        "certChain": chain,
        "rootCert": roots,
        "nextRefresh": rfc3339(status.next_refresh) if status.next_refresh else None,
        "error": status.error,
    }
