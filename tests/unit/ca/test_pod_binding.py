"""The workload rule: a service-account token works only while its bound pod lives."""

from __future__ import annotations

import pytest

from mesh.tokens import ServiceAccountClaims
from services.ca.pod_binding import binding_decision

pytestmark = pytest.mark.unit

CLAIMS = ServiceAccountClaims("shop", "web-api", "web-0", "uid-1", "jti", 0)


def pod(**changes: object) -> dict:
    meta = {"name": "web-0", "namespace": "shop", "uid": "uid-1"}
    spec = {"nodeName": "node-1", "serviceAccountName": "web-api"}
    for key, value in changes.items():
        (meta if key in meta or key == "deletionTimestamp" else spec)[key] = value
    return {"metadata": meta, "spec": spec}


@pytest.mark.parametrize(
    ("live", "allowed", "words"),
    [
        (pod(), True, "live pod shop/web-0 on node node-1"),
        (None, False, "no longer exists"),
        (pod(uid="uid-2"), False, "another uid"),
        (pod(deletionTimestamp="2030-01-01T00:00:00Z"), False, "being deleted"),
        (pod(nodeName=""), False, "not bound to a node"),
        (pod(serviceAccountName="billing"), False, "runs as service account billing"),
    ],
)
def test_binding_decision(live: dict | None, allowed: bool, words: str) -> None:
    decision = binding_decision(CLAIMS, live)
    assert decision.allowed is allowed and words in decision.reason
