"""Which pods belong in the ambient mesh (DESIGN §7), as a pure function of the pod and its namespace.

Follows Istio's ambient selection (istio/istio pkg/kube/util.go PodRedirectionEnabled and the
istio-cni informer): the namespace or the pod carries `istio.io/dataplane-mode=ambient`, the
pod's own `istio.io/dataplane-mode=none` opts it out, and anything that marks the pod for a
sidecar takes precedence and leaves it out (`istio-injection=enabled` on the pod or its
namespace, `sidecar.istio.io/inject=true` on the pod, `istio.io/rev`, or the
`sidecar.istio.io/status` annotation of an injected pod). Host-network pods share the node's
netns and are never captured, and a pod that has terminated leaves the mesh.
"""

from __future__ import annotations

from typing import Any, NamedTuple

Json = dict[str, Any]

DATAPLANE_MODE = "istio.io/dataplane-mode"
MODE_AMBIENT = "ambient"
MODE_NONE = "none"
INJECTION_LABEL = "istio-injection"
INJECT_POD_LABEL = "sidecar.istio.io/inject"
REVISION_LABEL = "istio.io/rev"
SIDECAR_STATUS = "sidecar.istio.io/status"
REDIRECTION_ANNOTATION = "ambient.istio.io/redirection"
REDIRECTION_ENABLED = "enabled"
TERMINAL_PHASES = ("Succeeded", "Failed")


class Enrollment(NamedTuple):
    """The decision and a short reason for logs (`namespace-label`, `pod-opted-out`, ...)."""

    enrolled: bool
    reason: str


def _meta(obj: Json | None, key: str) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get(key) or {}


def _sidecar_reason(pod: Json, namespace: Json | None) -> str | None:
    """Why the pod is a sidecar pod, or None when it is not."""
    labels, ns_labels = _meta(pod, "labels"), _meta(namespace, "labels")
    if SIDECAR_STATUS in _meta(pod, "annotations"):
        return "sidecar-injected"
    if labels.get(INJECTION_LABEL) == "enabled" or ns_labels.get(INJECTION_LABEL) == "enabled":
        return "sidecar-injection-enabled"
    if labels.get(INJECT_POD_LABEL) == "true":
        return "sidecar-injection-enabled"
    if REVISION_LABEL in labels or REVISION_LABEL in ns_labels:
        return "revision-label"
    return None


def enrolled(pod: Json, namespace: Json | None) -> Enrollment:
    """Whether `pod` (in `namespace`, None when unknown) is captured, and why."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    if spec.get("hostNetwork"):
        return Enrollment(False, "host-network")
    if status.get("phase") in TERMINAL_PHASES:
        return Enrollment(False, "pod-terminated")
    sidecar = _sidecar_reason(pod, namespace)
    if sidecar:
        return Enrollment(False, sidecar)
    mode = _meta(pod, "labels").get(DATAPLANE_MODE)
    if mode == MODE_NONE:
        return Enrollment(False, "pod-opted-out")
    if mode == MODE_AMBIENT:
        return Enrollment(True, "pod-label")
    if _meta(namespace, "labels").get(DATAPLANE_MODE) == MODE_AMBIENT:
        return Enrollment(True, "namespace-label")
    return Enrollment(False, "not-ambient")


def annotated(pod: Json | None) -> bool:
    """Whether the pod carries `ambient.istio.io/redirection: enabled`."""
    return _meta(pod, "annotations").get(REDIRECTION_ANNOTATION) == REDIRECTION_ENABLED
