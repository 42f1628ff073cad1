"""What a node's own processes may change, like Kubernetes' NodeRestriction admission plugin.

A node token (principal `system:node:{name}`) reads everything; it writes only:
- the status of pods scheduled on its node (pod runtime);
- on those pods, annotations under `ambient.istio.io/` (node agent: redirection enabled), and the
  binding of an unscheduled pod to itself (`spec.nodeName`);
- its own Node's status.
Each write is checked against the stored object inside the writer, so the check and the write see
the same version.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mesh.resources.core import NODE, POD

from . import errors
from .auth import NODE_ROLE, Principal

Json = dict[str, Any]
Guard = Callable[[Json, Json], None]  # (stored object, object about to be written) -> raise to refuse
AGENT_ANNOTATION_PREFIX = "ambient.istio.io/"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def node_of(principal: Principal) -> str | None:
    if principal.role != NODE_ROLE:
        return None
    return principal.user.removeprefix("system:node:")


def guard_for(principal: Principal, kind_key: str, subresource: str | None, verb: str, name: str | None) -> Guard:
    """The check a node's write must pass, or a 403 when the write is never allowed."""
    node = node_of(principal)
    assert node is not None
    refuse = errors.ApiError(403, "Forbidden", f'{kind_key} "{name}" is forbidden: node "{node}" may not {verb} it')
    if verb not in ("update", "patch"):
        raise refuse
    if kind_key == NODE.key and subresource == "status" and name == node:
        return lambda _old, _new: None
    if kind_key != POD.key:
        raise refuse
    if subresource == "status":
        return lambda old, _new: _on_node(old, node, refuse)
    return lambda old, new: _agent_patch(old, new, node, refuse)


def _on_node(pod: Json, node: str, refuse: errors.ApiError) -> None:
    if (pod.get("spec") or {}).get("nodeName") != node:
        raise refuse


def _agent_patch(old: Json, new: Json, node: str, refuse: errors.ApiError) -> None:
    """Only ambient.istio.io/ annotations may change, plus binding an unscheduled pod to itself."""
    old_node = (old.get("spec") or {}).get("nodeName")
    new_node = (new.get("spec") or {}).get("nodeName")
    if old_node not in (None, "", node) or new_node != (old_node or new_node):
        raise refuse
    if not old_node and new_node not in (None, node):
        raise refuse
    if not old_node and not new_node:
        raise refuse  # an unscheduled pod is not this node's to annotate

    def strip(obj: Json) -> Json:
        meta = dict(obj.get("metadata") or {})
        annotations = {
            k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith(AGENT_ANNOTATION_PREFIX)
        }
        meta["annotations"] = annotations or None
        for server_set in ("resourceVersion", "generation"):
            meta.pop(server_set, None)
        spec = {k: v for k, v in (obj.get("spec") or {}).items() if k != "nodeName"}
        return {**obj, "metadata": meta, "spec": spec}

    if strip(old) != strip(new):
        raise refuse
