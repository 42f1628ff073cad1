"""What a waypoint Gateway should turn into (pure): its Service, its pods and their nodes, what to
delete, and the Gateway's status. The API calls are in waypoint_reconciler.py; what it shares with
the ingress job (placement, the plan, ownership) is in deployment.py.

The shapes follow docs/waypoint.md, "Deployment (contract)". Objects are plain JSON dicts, as
they come from and go to istiod's API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import deployment as dp
from .deployment import (
    DATAPLANE_MODE_LABEL,
    GATEWAY_NAME_LABEL,  # noqa: F401  (re-exported: tests name it through this module)
    MANAGED_LABEL,  # noqa: F401  (re-exported: the reconciler and tests name it through this module)
    Json,
    Plan,
    owner_reference,
)

WAYPOINT_CLASS = "istio-waypoint"
MANAGED_VALUE = "istio.io-mesh-controller"
REPLICAS_ANNOTATION = "mesh.istio.io/replicas"
SERVICE_ACCOUNT_ANNOTATION = "gateway.istio.io/service-account"
DEFAULT_SERVICE_ACCOUNT = "waypoint"  # Istio's name
MAX_REPLICAS = 16  # a bound on what one annotation can ask the job to create
HBONE_PORT = 15008
STATUS_PORT = 15021
CONTAINER_NAME = "istio-proxy"
OWNED_CONDITIONS = {"Accepted", "Programmed"}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

_meta = dp.meta_of


def is_waypoint(gateway: Json | None) -> bool:
    """A Gateway this job deploys: class `istio-waypoint`."""
    return gateway is not None and (gateway.get("spec") or {}).get("gatewayClassName") == WAYPOINT_CLASS


def pod_selector(name: str) -> str:
    """The label selector of the pods (and Service) made for Gateway `name`."""
    return dp.pod_selector(name, MANAGED_VALUE)


# --- validation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """Whether the Gateway can be deployed, and the parameters read from it."""

    accepted: bool
    reason: str = "Accepted"
    message: str = "Resource accepted"
    replicas: int = 1
    service_account: str = DEFAULT_SERVICE_ACCOUNT


def validate(gateway: Json) -> Verdict:
    """Check what the schema cannot: the HBONE listener (Istio's `mesh` listener) and the
    annotations this implementation reads."""
    listeners = (gateway.get("spec") or {}).get("listeners") or []
    if not any(li.get("protocol") == "HBONE" and li.get("port") == HBONE_PORT for li in listeners):
        return Verdict(
            False,
            "ListenersNotValid",
            f"a waypoint needs a listener with protocol HBONE on port {HBONE_PORT} "
            "(Istio's: {name: mesh, port: 15008, protocol: HBONE}); add it, or let "
            "`meshctl waypoint apply` write the Gateway",
        )
    annotations = _meta(gateway).get("annotations") or {}
    raw = annotations.get(REPLICAS_ANNOTATION, "1")
    if not raw.isdigit() or int(raw) > MAX_REPLICAS:
        return Verdict(
            False,
            "InvalidParameters",
            f"annotation {REPLICAS_ANNOTATION} must be a whole number from 0 to {MAX_REPLICAS} (got {raw!r})",
        )
    account = annotations.get(SERVICE_ACCOUNT_ANNOTATION, DEFAULT_SERVICE_ACCOUNT)
    if not _DNS_LABEL.match(account):
        return Verdict(
            False,
            "InvalidParameters",
            f"annotation {SERVICE_ACCOUNT_ANNOTATION} must be a service account name "
            f"(a DNS label such as 'waypoint'; got {account!r})",
        )
    return Verdict(True, replicas=int(raw), service_account=account)


# --- desired objects -----------------------------------------------------------------------------


def owned_labels(name: str) -> dict[str, str]:
    return dp.owned_labels(name, MANAGED_VALUE)


def desired_service(gateway: Json) -> Json:
    # As Istio's waypoint Service: appProtocol `all` on the HBONE port.
    ports = [
        {"name": "mesh", "port": HBONE_PORT, "protocol": "TCP", "appProtocol": "all"},
        {"name": "status-port", "port": STATUS_PORT, "protocol": "TCP", "appProtocol": "tcp"},
    ]
    return dp.gateway_service(gateway, MANAGED_VALUE, ports)


def desired_pod(gateway: Json, pod_name: str, service_account: str, node: str | None) -> Json:
    meta = _meta(gateway)
    name, namespace = meta["name"], meta["namespace"]
    spec: Json = {
        "serviceAccountName": service_account,
        "containers": [
            {
                "name": CONTAINER_NAME,
                "command": ["waypoint", "--gateway", f"{namespace}/{name}"],
                "ports": [
                    {"name": "hbone", "containerPort": HBONE_PORT, "protocol": "TCP"},
                    {"name": "status-port", "containerPort": STATUS_PORT, "protocol": "TCP"},
                ],
                "readinessProbe": {
                    "httpGet": {"path": "/healthz/ready", "port": STATUS_PORT},
                    "periodSeconds": 2,
                },
            }
        ],
    }
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": namespace,
            # ztunnel never captures a waypoint: it speaks HBONE itself.
            "labels": {**owned_labels(name), DATAPLANE_MODE_LABEL: "none"},
            "ownerReferences": [owner_reference(gateway)],
        },
        "spec": spec,
    }


def owned_by_name(obj: Json, name: str) -> bool:
    """Made by this job for a Gateway called `name` (this one or an earlier one of that name)."""
    return dp.owned_by_name(obj, name, MANAGED_VALUE)


def workload(gateway: Json, verdict: Verdict) -> dp.Workload:
    """The waypoint as a deployment.Workload."""
    return dp.Workload(
        MANAGED_VALUE,
        "waypoint",
        verdict.replicas,
        desired_service(gateway),
        lambda pod_name, node: desired_pod(gateway, pod_name, verdict.service_account, node),
    )


def plan_cleanup(name: str, pods: list[Json], service: Json | None) -> Plan:
    """Everything made for a Gateway that is gone or no longer a waypoint."""
    return dp.plan_cleanup(name, pods, service, MANAGED_VALUE)


def plan_waypoint(
    gateway: Json,
    verdict: Verdict,
    pods: list[Json],
    service: Json | None,
    nodes: list[Json],
    waypoint_pods: list[Json],
) -> Plan:
    """The writes for an accepted waypoint Gateway (`pods`: those with its labels in its namespace;
    `waypoint_pods`: every waypoint pod, for spreading)."""
    return dp.plan_deployment(gateway, workload(gateway, verdict), pods, service, nodes, waypoint_pods)


# --- status --------------------------------------------------------------------------------------


def programmed(gateway: Json, verdict: Verdict, pods: list[Json], nodes: list[Json], conflict: str = "") -> Json:
    """The Programmed condition: True once a waypoint pod is Running (and Ready when it reports readiness)."""
    meta = _meta(gateway)
    if conflict:
        return {"type": "Programmed", "status": "False", "reason": "AddressNotAssigned", "message": conflict}
    owned = sorted((p for p in pods if owned_by_name(p, meta["name"])), key=lambda p: _meta(p)["name"])
    ready = [p for p in owned if dp.pod_ready(p)]
    if ready:
        host = f"{meta['name']}.{meta['namespace']}.svc.cluster.local:{HBONE_PORT}"
        return {
            "type": "Programmed",
            "status": "True",
            "reason": "Programmed",
            "message": f"Resource programmed, assigned to service(s) {host}",
        }
    if verdict.replicas == 0:
        message = f"annotation {REPLICAS_ANNOTATION} is 0: no waypoint pod runs"
    else:
        message = dp.not_ready_message(owned, nodes, "waypoint")
    return {"type": "Programmed", "status": "False", "reason": "Pending", "message": message}


def desired_status(
    gateway: Json, verdict: Verdict, service: Json | None, pods: list[Json], nodes: list[Json], conflict: str = ""
) -> tuple[list[Json] | None, list[Json]]:
    """(status.addresses, the conditions this job owns) for a waypoint Gateway."""
    if not verdict.accepted:
        accepted = {"type": "Accepted", "status": "False", "reason": verdict.reason, "message": verdict.message}
        not_programmed = {
            "type": "Programmed",
            "status": "False",
            "reason": "Invalid",
            "message": f"the Gateway was not accepted: {verdict.message}",
        }
        return None, [accepted, not_programmed]
    accepted = {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "Resource accepted"}
    ip = ((service or {}).get("spec") or {}).get("clusterIP") if not conflict else None
    addresses = [{"type": "IPAddress", "value": ip}] if ip and ip != "None" else None
    return addresses, [accepted, programmed(gateway, verdict, pods, nodes, conflict)]
