"""The README's first command, run as a user would, with what it prints checked.

`bash scripts/demo.sh` (state in a temporary directory) must bring the mesh up and walk the seed's
journey; each claim it prints is asserted here: the pods join without a restart, both identities
are shown, allow-nothing refuses, the ALLOW lets sleep in and keeps notsleep out, the waypoint's
policy answers GET 200 and DELETE 403 `RBAC: access denied`, the canary splits about 90/10, and
the metrics excerpt has both L4 and L7 lines. Then `demo.sh down` must leave nothing behind.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh import netns
from tests import harness
from tests.e2e.test_cluster import leftovers

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

DEMO = harness.ROOT / "scripts" / "demo.sh"


def _run(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESH_STATE_DIR": str(state)}
    return subprocess.run(["bash", str(DEMO), *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    harness.need("root", os.geteuid() == 0)
    harness.need("redis", harness.port_open("127.0.0.1", 6379))
    if netns.exists("mesh-underlay"):
        pytest.skip("a cluster is already up on this machine (meshctl cluster down first)")
    state = tmp_path_factory.mktemp("demo")
    try:
        up = _run(state)
        assert up.returncode == 0, f"demo.sh failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
        yield up.stdout
    finally:
        down = _run(state, "down")
        assert down.returncode == 0, down.stderr
    assert leftovers() == {"netns": [], "etc_netns": [], "links": [], "routes": []}
    assert not subprocess.run(["pgrep", "-f", str(state)], capture_output=True).stdout, "processes left behind"


def test_the_namespace_joins_without_a_restart(demo: str) -> None:
    found = re.search(r"web-api-v1's process: pid (\d+) before, (\d+) after", demo)
    assert found and found.group(1) == found.group(2), demo
    assert re.search(r"default\s+sleep\s+198\.18\.\d+\.\d+\s+node-\d\s+None\s+HBONE", demo)


def test_both_identities_are_shown(demo: str) -> None:
    assert '"src.identity":"spiffe://cluster.local/ns/default/sa/sleep"' in demo
    assert '"dst.identity":"spiffe://cluster.local/ns/default/sa/web-api"' in demo
    assert re.search(r"spiffe://cluster.local/ns/default/sa/sleep\s+Leaf\s+Available\s+true", demo)


def test_l4_policies_refuse_then_admit_only_sleep(demo: str) -> None:
    assert "allow-nothing: sleep → web-api: 000" in demo
    assert "allow sleep:   sleep → web-api: 200; notsleep → web-api: 000" in demo


def test_the_waypoint_allows_get_and_denies_delete(demo: str) -> None:
    assert "✅ waypoint default/waypoint is ready!" in demo
    assert "sleep GET    → 200" in demo
    assert "sleep DELETE → 403 (RBAC: access denied)" in demo


def test_the_canary_splits_about_90_10(demo: str) -> None:
    v1 = int(re.search(r'(\d+) "name": "v1"', demo).group(1))
    v2 = int(re.search(r'(\d+) "name": "v2"', demo).group(1))
    assert v1 + v2 == 100 and 75 <= v1 <= 99, (v1, v2)


def test_metrics_show_l4_and_l7(demo: str) -> None:
    l4 = re.search(r"\d+\s+source_principal=spiffe://cluster.local/ns/default/sa/sleep, destination_principal=", demo)
    l7 = re.search(r"\d+\s+source_principal=\S+sa/sleep, request_protocol=http, response_code=403, ", demo)
    assert l4 and l7, demo[-2000:]
    assert "Stop it with: bash scripts/demo.sh down" in demo
