"""Invalid objects are refused with 422 naming the field, and nothing is stored."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests import harness

pytestmark = pytest.mark.integration

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ok"}, "spec": {"containers": [{"name": "c"}]}}
SVC = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ok"}, "spec": {"ports": [{"port": 80}]}}
AP = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "ok"}, "spec": {}}
PA = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": {"name": "ok"}, "spec": {}}
RA = {"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication", "metadata": {"name": "ok"}, "spec": {}}
VS = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "ok"}}
DR = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "ok"}}
SE = {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "ok"}}
GW = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "ok"}}
HR = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "ok"}}

PATHS = {
    "Pod": "/api/v1/namespaces/default/pods",
    "Service": "/api/v1/namespaces/default/services",
    "Namespace": "/api/v1/namespaces",
    "AuthorizationPolicy": "/apis/security.istio.io/v1/namespaces/default/authorizationpolicies",
    "PeerAuthentication": "/apis/security.istio.io/v1/namespaces/default/peerauthentications",
    "RequestAuthentication": "/apis/security.istio.io/v1/namespaces/default/requestauthentications",
    "VirtualService": "/apis/networking.istio.io/v1/namespaces/default/virtualservices",
    "DestinationRule": "/apis/networking.istio.io/v1/namespaces/default/destinationrules",
    "ServiceEntry": "/apis/networking.istio.io/v1/namespaces/default/serviceentries",
    "Gateway": "/apis/gateway.networking.k8s.io/v1/namespaces/default/gateways",
    "HTTPRoute": "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes",
}


def with_(base: dict[str, Any], **parts: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in parts.items():
        out[key] = value
    return out


def meta(base: dict[str, Any], **fields: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    out["metadata"].update(fields)
    return out


HBONE = {"name": "mesh", "port": 15008, "protocol": "HBONE"}

# (description, object, field the 422 must name)
INVALID = [
    ("name with capitals", meta(POD, name="Sleep"), "metadata.name"),
    ("name with underscore", meta(SVC, name="web_api"), "metadata.name"),
    ("service name starting with a digit", meta(SVC, name="1web"), "metadata.name"),
    (
        "namespace name with a dot",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}},
        "metadata.name",
    ),
    ("label key with a space", meta(POD, labels={"a b": "x"}), "metadata.labels"),
    ("label value too long", meta(POD, labels={"app": "x" * 64}), "metadata.labels"),
    ("pod without containers", with_(POD, spec={"containers": []}), "spec.containers"),
    (
        "container port as a string",
        with_(POD, spec={"containers": [{"name": "c", "ports": [{"containerPort": "80"}]}]}),
        "spec.containers[0].ports[0].containerPort",
    ),
    (
        "container port out of range",
        with_(POD, spec={"containers": [{"name": "c", "ports": [{"containerPort": 70000}]}]}),
        "spec.containers[0].ports[0].containerPort",
    ),
    (
        "unknown restart policy",
        with_(POD, spec={"containers": [{"name": "c"}], "restartPolicy": "Sometimes"}),
        "spec.restartPolicy",
    ),
    (
        "duplicate container names",
        with_(POD, spec={"containers": [{"name": "c"}, {"name": "c"}]}),
        "spec.containers[1].name",
    ),
    ("service port missing", with_(SVC, spec={"ports": [{"name": "http"}]}), "spec.ports[0].port"),
    ("service ports without names", with_(SVC, spec={"ports": [{"port": 80}, {"port": 81}]}), "spec.ports[0].name"),
    ("service type unknown", with_(SVC, spec={"type": "Magic", "ports": [{"port": 80}]}), "spec.type"),
    ("cluster IP not an address", with_(SVC, spec={"clusterIP": "nope", "ports": [{"port": 80}]}), "spec.clusterIP"),
    (
        "cluster IP outside the service range",
        with_(SVC, spec={"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}),
        "spec.clusterIP",
    ),
    ("policy action unknown", with_(AP, spec={"action": "MAYBE"}), "spec.action"),
    (
        "selector and targetRefs together",
        with_(
            AP,
            spec={
                "selector": {"matchLabels": {"app": "a"}},
                "targetRefs": [{"kind": "Service", "group": "", "name": "a"}],
            },
        ),
        "spec.targetRefs",
    ),
    ("CUSTOM without a provider", with_(AP, spec={"action": "CUSTOM", "rules": [{}]}), "spec.provider"),
    (
        "policy port not a number",
        with_(AP, spec={"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]}),
        "spec.rules[0].to[0].operation.ports[0]",
    ),
    (
        "ipBlocks not a CIDR",
        with_(AP, spec={"rules": [{"from": [{"source": {"ipBlocks": ["300.1.1.1/8"]}}]}]}),
        "spec.rules[0].from[0].source.ipBlocks[0]",
    ),
    ("mTLS mode unknown", with_(PA, spec={"mtls": {"mode": "SOMETIMES"}}), "spec.mtls.mode"),
    (
        "jwks and jwksUri together",
        with_(RA, spec={"jwtRules": [{"issuer": "i", "jwks": "{}", "jwksUri": "https://x/k"}]}),
        "spec.jwtRules[0].jwks",
    ),
    (
        "virtual service route without a host",
        with_(VS, spec={"hosts": ["r"], "http": [{"route": [{"destination": {"subset": "v1"}}]}]}),
        "spec.http[0].route[0].destination.host",
    ),
    (
        "fault percentage above 100",
        with_(
            VS,
            spec={
                "hosts": ["r"],
                "http": [
                    {
                        "route": [{"destination": {"host": "r"}}],
                        "fault": {"abort": {"httpStatus": 500, "percentage": {"value": 150}}},
                    }
                ],
            },
        ),
        "spec.http[0].fault.abort.percentage.value",
    ),
    ("destination rule without a host", with_(DR, spec={"subsets": [{"name": "v1"}]}), "spec.host"),
    (
        "service entry without hosts",
        with_(SE, spec={"ports": [{"number": 80, "name": "http", "protocol": "HTTP"}]}),
        "spec.hosts",
    ),
    ("gateway without a class", with_(GW, spec={"listeners": [HBONE]}), "spec.gatewayClassName"),
    (
        "gateway listener port 0",
        with_(GW, spec={"gatewayClassName": "istio-waypoint", "listeners": [{**HBONE, "port": 0}]}),
        "spec.listeners[0].port",
    ),
    (
        "route weight negative",
        with_(HR, spec={"rules": [{"backendRefs": [{"name": "a", "port": 80, "weight": -1}]}]}),
        "spec.rules[0].backendRefs[0].weight",
    ),
    (
        "route path without a leading slash",
        with_(HR, spec={"rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "api"}}]}]}),
        "spec.rules[0].matches[0].path.value",
    ),
]


def _revision(client) -> str:
    return client.get("/api/v1/namespaces").json()["metadata"]["resourceVersion"]


def _snapshot(client) -> dict[str, list[str]]:
    return {
        kind: sorted(i["metadata"]["name"] for i in client.get(path).json()["items"]) for kind, path in PATHS.items()
    }


def test_at_least_twenty_invalid_objects_are_refused_with_their_field(istiod: harness.Istiod) -> None:
    assert len(INVALID) >= 20
    with istiod.client() as client:
        before_revision, before = _revision(client), _snapshot(client)
        problems = []
        for description, obj, field in INVALID:
            response = client.post(PATHS[obj["kind"]], json=obj)
            body = response.json()
            fields = [c.get("field") for c in (body.get("details") or {}).get("causes", [])]
            if response.status_code != 422 or body.get("reason") != "Invalid" or field not in fields:
                problems.append(f"{description}: {response.status_code} {fields} {body.get('message')}")
            elif body["details"]["kind"] != obj["kind"] or field not in body["message"]:
                problems.append(f"{description}: Status does not name kind and field: {body}")
        assert not problems, "\n".join(problems)
        assert _revision(client) == before_revision
        assert _snapshot(client) == before


def test_invalid_update_and_patch_change_nothing(istiod: harness.Istiod) -> None:
    with istiod.client() as client:
        created = client.post(PATHS["Pod"], json=meta(POD, name="keep")).json()
        revision = _revision(client)
        bad = copy.deepcopy(created)
        bad["metadata"]["labels"] = {"bad key!": "x"}
        assert client.put(f"{PATHS['Pod']}/keep", json=bad).status_code == 422
        patch = client.patch(
            f"{PATHS['Pod']}/keep",
            content=b'{"spec":{"restartPolicy":"Sometimes"}}',
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert patch.status_code == 422
        assert client.get(f"{PATHS['Pod']}/keep").json() == created
        assert _revision(client) == revision
        client.delete(f"{PATHS['Pod']}/keep")


def test_unknown_fields_follow_field_validation(istiod: harness.Istiod) -> None:
    with istiod.client() as client:
        obj = with_(POD, spec={"containers": [{"name": "c", "colour": "blue"}]})
        strict = client.post(PATHS["Pod"], json=meta(obj, name="strict"))
        assert strict.status_code == 400
        assert strict.json()["message"] == 'strict decoding error: unknown field "spec.containers[0].colour"'
        warn = client.post(PATHS["Pod"] + "?fieldValidation=Warn", json=meta(obj, name="warned"))
        assert warn.status_code == 201
        assert warn.headers.get("warning") == '299 - "unknown field \\"spec.containers[0].colour\\""'
        assert "colour" not in warn.json()["spec"]["containers"][0]
        ignore = client.post(PATHS["Pod"] + "?fieldValidation=Ignore", json=meta(obj, name="ignored"))
        assert ignore.status_code == 201 and "warning" not in ignore.headers
        crd = client.post(PATHS["AuthorizationPolicy"], json=with_(AP, spec={"bogus": 1}))
        assert crd.status_code == 400 and crd.json()["message"] == ".spec.bogus: field not declared in schema"
        for name in ("warned", "ignored"):
            client.delete(f"{PATHS['Pod']}/{name}")


def test_malformed_bodies_are_bad_requests(istiod: harness.Istiod) -> None:
    with istiod.client() as client:
        for content in (b"{", b"[]", b"null", b'"text"'):
            response = client.post(PATHS["Pod"], content=content, headers={"Content-Type": "application/json"})
            assert response.status_code == 400, (content, response.text)
            assert response.json()["kind"] == "Status"
        wrong_kind = client.post(PATHS["Pod"], json=with_(POD, kind="Service"))
        assert wrong_kind.status_code == 400
        wrong_ns = client.post(PATHS["Pod"], json=meta(POD, namespace="other"))
        assert wrong_ns.status_code == 400
        missing_ns = client.post("/api/v1/namespaces/nowhere/pods", json=POD)
        assert missing_ns.status_code == 404 and missing_ns.json()["message"] == 'namespaces "nowhere" not found'
