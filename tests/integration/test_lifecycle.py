"""Every control-plane process stops cleanly and promptly on SIGTERM, and refuses bad settings with
one clear line."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests import harness

pytestmark = pytest.mark.integration


def stop_within(proc: subprocess.Popen, seconds: float) -> int:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(seconds + 5)
    assert time.monotonic() - started < seconds, "took too long to stop"
    return code


def test_sigterm_stops_each_process_cleanly(tmp_path: Path) -> None:
    with harness.running_istiod(tmp_path, "sqlite") as istiod:
        ca = harness.MeshCa(istiod)
        ca.start()
        xds = harness.MeshXds(istiod)
        xds.start()
        with istiod.client() as client, client.stream("GET", "/api/v1/pods?watch=true") as watch:
            assert watch.status_code == 200  # an open watch must not hold istiod's shutdown
            for name, proc in (("mesh-xds", xds.proc), ("mesh-ca", ca.proc)):
                assert proc is not None
                assert stop_within(proc, 8) == 0, name
            ca.proc = xds.proc = None
            assert istiod.proc is not None
            assert stop_within(istiod.proc, 10) == 0
            istiod.proc = None
        with harness.running_worker(istiod) as worker:
            assert stop_within(worker, 10) == 0


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        ("istiod", ["--listen", "nowhere"], "istiod: MESH_LISTEN=nowhere (expected HOST:PORT"),
        ("istiod", ["--service-cidr", "10.0.0.0/30"], "istiod: MESH_SERVICE_CIDR=10.0.0.0/30"),
        ("mesh-ca", ["--listen", "1.2.3.4:99999"], "mesh-ca: MESH_LISTEN=1.2.3.4:99999"),
        ("mesh-xds", ["--debounce-quiet", "-1"], "mesh-xds: MESH_DEBOUNCE_QUIET=-1"),
    ],
)
def test_bad_settings_exit_2_with_one_line(command: str, args: list[str], expected: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(harness.VENV_BIN / command), "--state-dir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr


def test_services_without_istiod_say_what_to_do(tmp_path: Path) -> None:
    for command in ("mesh-ca", "mesh-xds"):
        result = subprocess.run(
            [str(harness.VENV_BIN / command), "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 2
        assert "istiod.json not found" in result.stderr and "same --state-dir" in result.stderr, result.stderr
