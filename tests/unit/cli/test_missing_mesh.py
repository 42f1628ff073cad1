"""meshctl pointed at a state directory with no mesh: one clear line and exit 1, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.__main__ import main


@pytest.mark.parametrize(
    "command",
    [["x", "exec", "sleep", "--", "true"], ["waypoint", "list", "-A"], ["apply", "-f", "/dev/null"]],
)
def test_no_mesh_at_the_state_directory_is_a_clear_error(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MESH_STATE_DIR", str(tmp_path / "nothing-here"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(command)
    err = capsys.readouterr().err
    assert exited.value.code == 1
    assert err.startswith("meshctl: ") and "nothing-here" in err and "Traceback" not in err
