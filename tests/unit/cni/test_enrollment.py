"""The enrollment decision (DESIGN §7), as a table."""

from __future__ import annotations

from typing import Any

import pytest

from dataplane.cni.nodeagent.enrollment import annotated, enrolled

pytestmark = pytest.mark.unit


def pod(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None, **spec: Any) -> dict:
    phase = spec.pop("phase", "Running")
    meta = {"name": "p", "namespace": "ns", "uid": "u1", "labels": labels or {}, "annotations": annotations or {}}
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "c"}], **spec},
        "status": {"phase": phase},
    }


def namespace(labels: dict[str, str]) -> dict:
    return {"metadata": {"name": "ns", "labels": labels}}


MODE = "istio.io/dataplane-mode"
AMBIENT_NS = namespace({MODE: "ambient"})
PLAIN_NS = namespace({})

CASES = [
    # (case, pod, namespace, enrolled, reason)
    ("namespace ambient", pod(), AMBIENT_NS, True, "namespace-label"),
    ("plain namespace", pod(), PLAIN_NS, False, "not-ambient"),
    ("namespace unknown", pod(), None, False, "not-ambient"),
    ("pod opts in", pod({MODE: "ambient"}), PLAIN_NS, True, "pod-label"),
    ("pod opts in, namespace unknown", pod({MODE: "ambient"}), None, True, "pod-label"),
    ("pod opts out", pod({MODE: "none"}), AMBIENT_NS, False, "pod-opted-out"),
    ("other mode value is ignored", pod({MODE: "sidecar"}), AMBIENT_NS, True, "namespace-label"),
    (
        "namespace injection",
        pod(),
        namespace({MODE: "ambient", "istio-injection": "enabled"}),
        False,
        "sidecar-injection-enabled",
    ),
    (
        "namespace injection disabled",
        pod(),
        namespace({MODE: "ambient", "istio-injection": "disabled"}),
        True,
        "namespace-label",
    ),
    ("pod injection label", pod({"istio-injection": "enabled"}), AMBIENT_NS, False, "sidecar-injection-enabled"),
    (
        "pod injection beats pod ambient",
        pod({"istio-injection": "enabled", MODE: "ambient"}),
        PLAIN_NS,
        False,
        "sidecar-injection-enabled",
    ),
    (
        "sidecar.istio.io/inject=true",
        pod({"sidecar.istio.io/inject": "true"}),
        AMBIENT_NS,
        False,
        "sidecar-injection-enabled",
    ),
    ("pod revision", pod({"istio.io/rev": "canary"}), AMBIENT_NS, False, "revision-label"),
    ("namespace revision", pod(), namespace({MODE: "ambient", "istio.io/rev": "1-24"}), False, "revision-label"),
    ("injected sidecar", pod(annotations={"sidecar.istio.io/status": "{}"}), AMBIENT_NS, False, "sidecar-injected"),
    ("host network", pod(hostNetwork=True), AMBIENT_NS, False, "host-network"),
    ("host network with pod label", pod({MODE: "ambient"}, hostNetwork=True), PLAIN_NS, False, "host-network"),
    ("succeeded", pod(phase="Succeeded"), AMBIENT_NS, False, "pod-terminated"),
    ("failed", pod(phase="Failed"), AMBIENT_NS, False, "pod-terminated"),
    ("pending still enrolls", pod(phase="Pending"), AMBIENT_NS, True, "namespace-label"),
]


@pytest.mark.parametrize(("case", "p", "namespace", "expected", "reason"), CASES, ids=[c[0] for c in CASES])
def test_enrollment(case: str, p: dict, namespace: dict | None, expected: bool, reason: str) -> None:
    decision = enrolled(p, namespace)
    assert decision == (expected, reason)
    assert decision.enrolled is expected and decision.reason == reason


def test_missing_metadata_is_tolerated() -> None:
    assert enrolled({"metadata": {"name": "p"}}, {"metadata": {"name": "ns"}}) == (False, "not-ambient")


def test_annotated() -> None:
    assert annotated(pod(annotations={"ambient.istio.io/redirection": "enabled"}))
    assert not annotated(pod(annotations={"ambient.istio.io/redirection": "disabled"}))
    assert not annotated(pod())
    assert not annotated(None)
