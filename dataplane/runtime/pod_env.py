"""The environment every container gets from the mesh (docs/waypoint.md, "Identity"): the pod's
facts, its service-account token file, and where the mesh's CA, xDS and trust bundle are.

Pure: the runtime calls it once the pod's IP is known; a container's own `env` may override any
of these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .spec import PodSpec


@dataclass(frozen=True)
class MeshEndpoints:
    """What this node knows of the mesh (node.json `root_cert`, `ca`, `xds_mtls`); None: unknown,
    and the variable is left out rather than set to something wrong."""

    node: str
    root_cert: str | None = None
    ca_address: str | None = None
    xds_address: str | None = None


def token_path(pod_dir: Path) -> Path:
    """Where a pod's service-account token is kept (mode 0600)."""
    return pod_dir / "token"


def mesh_env(pod: PodSpec, pod_ip: str, token_file: Path | None, mesh: MeshEndpoints) -> dict[str, str]:
    """The MESH_* variables of the contract table, for each container of `pod`."""
    env = {
        "MESH_POD_NAME": pod.name,
        "MESH_POD_NAMESPACE": pod.namespace,
        "MESH_POD_IP": pod_ip,
        "MESH_NODE_NAME": mesh.node,
        "MESH_SERVICE_ACCOUNT": pod.service_account,
    }
    optional = {
        "MESH_TOKEN_FILE": str(token_file) if token_file is not None else None,
        "MESH_ROOT_CERT": mesh.root_cert,
        "MESH_CA_ADDRESS": mesh.ca_address,
        "MESH_XDS_ADDRESS": mesh.xds_address,
    }
    env.update({k: v for k, v in optional.items() if v})
    return env
