"""Core (v1) kinds: Namespace, Node, ServiceAccount, Pod, Service, Secret.

Only the parts of the Kubernetes schema that a mesh on Linux hosts can use are typed; parts a
container runtime would interpret but this one does not (volumes, security contexts, affinity)
are accepted as free-form maps so that ordinary manifests apply unchanged. One module per kind.
"""

from ..kind import ResourceKind
from .namespace import NAMESPACE
from .node import NODE
from .pod import POD
from .secret import SECRET
from .service import SERVICE
from .service_account import SERVICE_ACCOUNT

CORE_KINDS: tuple[ResourceKind, ...] = (NAMESPACE, NODE, SERVICE_ACCOUNT, POD, SERVICE, SECRET)

__all__ = ["CORE_KINDS", "NAMESPACE", "NODE", "POD", "SECRET", "SERVICE", "SERVICE_ACCOUNT"]
