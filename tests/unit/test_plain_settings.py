"""mesh/plain_settings.py: flags over MESH_* variables over defaults, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dataplane.ztunnel.settings import ZtunnelSettings
from mesh.plain_settings import parse


def test_flags_win_over_the_environment_which_wins_over_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_CERT_TTL", "120")
    monkeypatch.setenv("MESH_NODE", "from-env")
    monkeypatch.setenv("MESH_ROOT_CERT", "/etc/roots.pem")
    settings = parse(ZtunnelSettings, "ztunnel", "", ["--node", "from-flag", "--drain-seconds", "0.5"])
    assert settings.node == "from-flag" and settings.cert_ttl == 120 and settings.drain_seconds == 0.5
    assert settings.root_cert == Path("/etc/roots.pem") and settings.token_file is None
    assert settings.admin_port == 15000 and settings.log_level == "info"


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--cert-ttl", "59"], "ztunnel: MESH_CERT_TTL=59 (must be >= 60)"),
        (["--admin-port", "http"], "ztunnel: MESH_ADMIN_PORT=http (expected an integer)"),
        (["--metrics-port", "70000"], "ztunnel: MESH_METRICS_PORT=70000 (must be <= 65535)"),
        (["--drain-seconds", "soon"], "ztunnel: MESH_DRAIN_SECONDS=soon (expected a number)"),
    ],
)
def test_a_bad_value_ends_the_process_with_one_line(argv: list[str], line: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dataplane.ztunnel", "--state-dir", "/nonexistent", *argv],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and done.stderr.strip() == line
