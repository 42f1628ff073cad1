"""`meshctl gateway list|status`: what an ingress Gateway's status says, as tables."""

from __future__ import annotations

from cli import gateway


def _gateway(listener_conditions: list[dict], programmed: str = "True") -> dict:
    return {
        "metadata": {"name": "edge", "namespace": "default"},
        "spec": {
            "gatewayClassName": "istio",
            "listeners": [{"name": "https", "protocol": "HTTPS", "port": 443, "hostname": "web.example.test"}],
        },
        "status": {
            "addresses": [{"type": "IPAddress", "value": "198.18.1.3"}, {"type": "IPAddress", "value": "198.19.0.9"}],
            "conditions": [
                {"type": "Accepted", "status": "True", "reason": "Accepted"},
                {"type": "Programmed", "status": programmed, "reason": "Programmed"},
            ],
            "listeners": [{"name": "https", "attachedRoutes": 2, "conditions": listener_conditions}],
        },
    }


HEALTHY = [
    {"type": "Accepted", "status": "True", "reason": "Accepted"},
    {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs"},
    {"type": "Programmed", "status": "True", "reason": "Programmed"},
]


def test_a_healthy_gateway_shows_addresses_and_routes_and_is_ok() -> None:
    text, healthy = gateway.render_status(_gateway(HEALTHY))
    assert healthy
    assert "addresses: 198.18.1.3, 198.19.0.9" in text
    row = next(line for line in text.splitlines() if line.startswith("https"))
    assert row.split()[:6] == ["https", "HTTPS", "443", "web.example.test", "2", "True"]


def test_a_missing_certificate_is_named_and_not_ok() -> None:
    broken = [
        {"type": "Accepted", "status": "True", "reason": "Accepted"},
        {"type": "ResolvedRefs", "status": "False", "reason": "InvalidCertificateRef", "message": "no web-cert"},
        {"type": "Programmed", "status": "False", "reason": "Invalid"},
    ]
    text, healthy = gateway.render_status(_gateway(broken, programmed="False"))
    assert not healthy
    assert "ResolvedRefs=False (InvalidCertificateRef: no web-cert)" in text


def test_list_keeps_only_ingress_gateways() -> None:
    waypoint = {
        "metadata": {"name": "waypoint", "namespace": "default"},
        "spec": {"gatewayClassName": "istio-waypoint"},
    }
    items = gateway._ingress([_gateway(HEALTHY), waypoint])
    out = gateway.render_list(items, False, "table")
    assert out.splitlines()[0].split() == ["NAME", "CLASS", "ADDRESS", "PROGRAMMED", "LISTENERS"]
    assert out.splitlines()[1].split() == ["edge", "istio", "198.18.1.3,198.19.0.9", "True", "1"]
    assert gateway.render_list([], False, "table") == "No ingress gateways found."
