"""Ingress benchmark: HTTPS keep-alive requests through the ingress gateway to a service, against
the same service reached directly over plain HTTP from the same client, in the same run.

`meshctl cluster up --nodes 2` in a fresh state directory; `web-api` (`mesh-sample-app`) on
node-2 in the ambient namespace `default`; an HTTPS Gateway `edge` (class istio, a test CA's
certificate for web.example.test) with an HTTPRoute to web-api. The client is this process in the
host's root namespace, as a user outside the mesh:
- direct: HTTP/1.1 to the web-api pod's IP:8080 (no TLS, no proxy);
- gateway: HTTPS (TLS 1.3, SNI web.example.test) to the gateway pod → HBONE mTLS with the
  gateway's identity → node-2's ztunnel → web-api.
Each request is `GET /bytes/1024` (1 KB answer). Figures per path: closed loop over `--conns`
keep-alive connections for `--seconds` (requests/s, p50/p99) and the gateway process's CPU per
1000 requests/s when paced at `--rate`.

Run as root: .venv/bin/python bench/ingress_bench.py [--seconds 4] [--conns 8] [--rate 500]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import loadgen  # closed-loop and paced load, the cluster run
import ztunnel_bench as zb  # shared cluster and measurement helpers

from tests.minica import MiniCa

REQUEST = b"GET /bytes/1024 HTTP/1.1\r\nHost: web.example.test\r\n\r\n"
GATEWAYS = "/apis/gateway.networking.k8s.io/v1/namespaces/default/gateways"


def setup(client: httpx.Client, state: Path) -> tuple[str, str, ssl.SSLContext]:
    """The service, the Gateway and its route; (web-api pod IP, gateway address, client TLS)."""
    ca = MiniCa("bench-ca")
    cert = ca.issue(("web.example.test",))
    server = [str(zb.BIN / "mesh-sample-app"), "--http", "8080"]
    body = zb.pod("web-api", "default", "node-2", server)
    body["spec"]["serviceAccountName"] = "web-api"
    client.post("/api/v1/namespaces/default/pods", json=body).raise_for_status()
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web-api"},
        "spec": {"selector": {"app": "web-api"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }
    client.post("/api/v1/namespaces/default/services", json=service).raise_for_status()
    client.patch(
        "/api/v1/namespaces/default",
        json={"metadata": {"labels": {"istio.io/dataplane-mode": "ambient"}}},
        headers={"Content-Type": "application/merge-patch+json"},
    ).raise_for_status()
    data = {"tls.crt": base64.b64encode(cert.chain_pem).decode(), "tls.key": base64.b64encode(cert.key_pem).decode()}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-cert"}, "type": "kubernetes.io/tls"}
    client.post("/api/v1/namespaces/default/secrets", json={**secret, "data": data}).raise_for_status()
    listener = {
        "name": "https",
        "hostname": "web.example.test",
        "port": 443,
        "protocol": "HTTPS",
        "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": "web-cert"}]},
    }
    gateway = {"gatewayClassName": "istio", "listeners": [listener]}
    client.post(
        GATEWAYS,
        json={
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "edge"},
            "spec": gateway,
        },
    ).raise_for_status()
    route = {
        "parentRefs": [{"name": "edge"}],
        "hostnames": ["web.example.test"],
        "rules": [{"backendRefs": [{"name": "web-api", "port": 80}]}],
    }
    client.post(
        "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes",
        json={
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web"},
            "spec": route,
        },
    ).raise_for_status()
    web_ip = zb.wait_running(client, "default", "web-api")["status"]["podIP"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = client.get(f"{GATEWAYS}/edge").json().get("status") or {}
        ok = any(c["type"] == "Programmed" and c["status"] == "True" for c in status.get("conditions", []))
        if ok and status.get("addresses"):
            break
        time.sleep(0.5)
    else:
        raise RuntimeError("the gateway was not programmed in time")
    tls = ssl.create_default_context(cadata=ca.pem.decode())
    tls.set_alpn_protocols(["http/1.1"])
    return web_ip, status["addresses"][0]["value"], tls


async def open_path(address: str, port: int, tls: ssl.SSLContext | None):
    reader, writer = await asyncio.open_connection(
        address, port, ssl=tls, server_hostname="web.example.test" if tls else None, limit=1 << 20
    )
    return reader, writer


def gateway_pid() -> int:
    out = subprocess.run(
        ["pgrep", "-f", "waypoint --gateway default/edge --mode ingress"], capture_output=True, text=True
    )
    pids = [int(p) for p in out.stdout.split()]
    if len(pids) != 1:
        raise RuntimeError(f"expected one gateway process, found {pids}")
    return pids[0]


async def run(state: Path, args: argparse.Namespace) -> dict:
    with zb.api(state) as client:
        web_ip, gateway_ip, tls = setup(client, state)
    pid = gateway_pid()
    paths = {"direct": (web_ip, 8080, None), "gateway": (gateway_ip, 443, tls)}
    errors = (OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError)
    for address, port, context in paths.values():  # until both answer, then warm up
        opener = functools.partial(open_path, address, port, context)
        await loadgen.until_answers(opener, REQUEST, f"{address}:{port}", errors)
        await loadgen.closed_loop(opener, REQUEST, 2, 1)
    figures: dict = {}
    for name, (address, port, context) in paths.items():
        opener = functools.partial(open_path, address, port, context)
        figures[name] = {
            "closed": await loadgen.closed_loop(opener, REQUEST, args.conns, args.seconds),
            "paced": await loadgen.paced(opener, REQUEST, args.rate, args.seconds, pid if name == "gateway" else None),
        }
    figures["gateway_rss_mb"] = zb.rss_mb(pid)
    return figures


def report(figures: dict, args: argparse.Namespace) -> None:
    print(
        f"ingress benchmark (GET → 1 KB, keep-alive; {args.conns} connections closed loop, {args.rate:.0f} rps"
        " paced; client on the host)"
    )
    print(f"  {'path':<26} {'closed rps':>11} {'p50 µs':>9} {'p99 µs':>9}   {'paced p50':>10} {'p99 µs':>9}")
    labels = {"direct": "direct (HTTP to the pod)", "gateway": "gateway (HTTPS, HBONE)"}
    for name, label in labels.items():
        c, p = figures[name]["closed"], figures[name]["paced"]
        print(f"  {label:<26} {c['rps']:>11.0f} {c['p50']:>9.0f} {c['p99']:>9.0f}   {p['p50']:>10.0f} {p['p99']:>9.0f}")
    d, g = figures["direct"], figures["gateway"]
    print(
        f"  gateway vs direct: {g['closed']['rps'] / d['closed']['rps']:.2f}x rps, "
        f"+{g['paced']['p50'] - d['paced']['p50']:.0f} µs p50 (paced)"
    )
    print(
        f"  gateway CPU: {g['paced']['vcpu_per_1000rps']:.3f} vCPU per 1000 rps; RSS {figures['gateway_rss_mb']:.1f} MB"
    )
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--conns", type=int, default=8)
    parser.add_argument("--rate", type=float, default=500)
    args = parser.parse_args()
    loadgen.on_a_new_cluster("ingress_bench", lambda state: run(state, args), lambda figures: report(figures, args))


if __name__ == "__main__":
    main()
