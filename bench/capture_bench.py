"""Node agent benchmark: time from the namespace label to every pod captured, and back (root only).

N pod namespaces (default 50; names `mesh-t-…`, no links, removed at the end) are told to a real
mesh-node-agent through the real istio-cni plugin; then the namespace is labelled ambient and the
clock runs until every pod is annotated and handed to the (fake) ztunnel, whose rules are then
checked. Baselines from the same run:
- installing the same rules into the same namespaces directly, one after the other (apply.install):
  the raw cost of the work the agent schedules;
- the plugin's ADD for a pod outside the mesh versus one inside it (captured before ADD returns).

Run: sudo .venv/bin/python bench/capture_bench.py [--pods N]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dataplane.cni.redirect import apply, rules
from dataplane.cni.redirect.iptables_state import differences
from mesh import netns
from tests import harness
from tests.fakes.fake_ztunnel import FakeZtunnel

NODE, NS = "bench-node", "bench"
RULESET = rules.build()


def api(istiod: harness.Istiod, method: str, path: str, body: dict | None = None) -> dict:
    with istiod.client() as client:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        response = client.request(method, path, json=body, headers=headers)
        assert response.status_code < 300, response.text
        return response.json()


def plugin_add(path: str, name: str, uid: str, socket_path: Path) -> float:
    """Exec istio-cni ADD as a runtime would; returns its wall time."""
    config = {"cniVersion": "1.0.0", "name": "mesh", "type": "istio-cni", "agent_socket": str(socket_path),
              "hold": True, "hold_timeout": 10, "prevResult": {"cniVersion": "1.0.0", "ips": []}}  # fmt: skip
    args = f"K8S_POD_NAMESPACE={NS};K8S_POD_NAME={name};K8S_POD_UID={uid}"
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": "ADD", "CNI_CONTAINERID": uid, "CNI_NETNS": path,
           "CNI_IFNAME": "eth0", "CNI_ARGS": args}  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(
        [str(harness.VENV_BIN / "istio-cni")], input=json.dumps(config).encode(), env=env, capture_output=True
    )
    assert done.returncode == 0, done.stdout
    return time.perf_counter() - started


def annotated_count(istiod: harness.Istiod) -> int:
    items = api(istiod, "GET", f"/api/v1/namespaces/{NS}/pods")["items"]
    return sum((p["metadata"].get("annotations") or {}).get("ambient.istio.io/redirection") == "enabled" for p in items)


def wait(check, timeout: float) -> float:
    started = time.perf_counter()
    while not check():
        assert time.perf_counter() - started < timeout, "timed out"
        time.sleep(0.01)
    return time.perf_counter() - started


def make_pod(istiod: harness.Istiod, name: str, tag: str) -> tuple[str, str]:
    """A pod in the API and a netns for it; returns (uid, netns path)."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
           "spec": {"nodeName": NODE, "containers": [{"name": "app", "command": ["app"]}]}}  # fmt: skip
    uid = api(istiod, "POST", f"/api/v1/namespaces/{NS}/pods", pod)["metadata"]["uid"]
    return uid, str(netns.create(f"mesh-t-{tag}-{name}"))


def run(pods: int, tmp: Path, created: list[str]) -> None:
    tag = secrets.token_hex(3)
    with harness.running_istiod(tmp, "sqlite") as istiod:
        state = tmp / "node"
        state.mkdir()
        (state / "token").write_text(harness.create_node(istiod, NODE))
        api(istiod, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        members = {}
        for i in range(pods):
            members[f"p{i}"] = make_pod(istiod, f"p{i}", tag)
            created.append(f"mesh-t-{tag}-p{i}")

        # Baseline: the rules alone, installed serially, then removed again.
        started = time.perf_counter()
        for _uid, path in members.values():
            apply.install(path, RULESET)
        raw_install = time.perf_counter() - started
        for _uid, path in members.values():
            apply.remove(path, RULESET)

        log = (state / "agent.log").open("ab")
        cmd = [str(harness.VENV_BIN / "mesh-node-agent"), "--node", NODE, "--state-dir", str(state),
               "--istiod", istiod.url, "--istiod-ca-file", str(istiod.ca_file)]  # fmt: skip
        agent = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        fake = FakeZtunnel(state / "ztunnel" / "zds.sock", ports=())
        try:
            harness.wait_for(lambda: (state / "cni" / "pluginevent.sock").exists(), 30, "agent", agent)
            fake.start()
            sock = state / "cni" / "pluginevent.sock"
            outside = [plugin_add(path, name, uid, sock) for name, (uid, path) in members.items()]

            api(
                istiod,
                "PATCH",
                f"/api/v1/namespaces/{NS}",
                {"metadata": {"labels": {"istio.io/dataplane-mode": "ambient"}}},
            )
            started = time.perf_counter()
            wait(lambda: annotated_count(istiod) == pods and len(fake.pods) == pods, 120)
            capture = time.perf_counter() - started
            assert all(differences(RULESET, apply.inspect(p, RULESET)) == [] for _u, p in members.values())

            extra = [make_pod(istiod, f"x{i}", tag) for i in range(5)]
            created += [f"mesh-t-{tag}-x{i}" for i in range(5)]
            inside = [plugin_add(path, f"x{i}", uid, sock) for i, (uid, path) in enumerate(extra)]

            api(
                istiod, "PATCH", f"/api/v1/namespaces/{NS}", {"metadata": {"labels": {"istio.io/dataplane-mode": None}}}
            )
            release = wait(lambda: annotated_count(istiod) == 0 and not fake.pods, 120)
        finally:
            fake.stop()
            agent.terminate()
            agent.wait(15)

    print(f"pods: {pods} (2-core figures vary; compare the ratios)")
    print(f"label → all captured (rules + ZDS Add + annotation): {capture * 1000:.0f} ms")
    print(f"  baseline, rules alone installed serially:           {raw_install * 1000:.0f} ms "
          f"(agent/baseline {capture / raw_install:.2f}x)")  # fmt: skip
    print(f"label removed → all released:                         {release * 1000:.0f} ms")
    print(f"plugin ADD, pod outside the mesh: p50 {statistics.median(outside) * 1000:.1f} ms")
    print(f"plugin ADD, captured before return: p50 {statistics.median(inside) * 1000:.1f} ms "
          f"({statistics.median(inside) / statistics.median(outside):.2f}x)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pods", type=int, default=50)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("capture_bench: needs root (network namespaces)")
    created: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            run(args.pods, Path(tmp), created)
        finally:
            for name in created:
                netns.delete(name)


if __name__ == "__main__":
    main()
