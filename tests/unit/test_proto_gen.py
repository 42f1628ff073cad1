"""The committed protobuf modules (mesh/proto_gen/) are exactly what scripts/gen-proto.sh makes of proto/.

A .proto edited without regenerating, or a generated file edited by hand, fails here (DESIGN §10's
CI check). Regenerate with `bash scripts/gen-proto.sh`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "mesh" / "proto_gen"


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_protobuf_modules_are_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "proto_gen"
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-proto.sh"), str(out)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    fresh, committed = _files(out), _files(COMMITTED)
    assert sorted(fresh) == sorted(committed), "run `bash scripts/gen-proto.sh`: the set of generated files differs"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"run `bash scripts/gen-proto.sh`: {', '.join(stale)} differ from what proto/ generates"


def test_every_proto_has_a_module() -> None:
    protos = sorted(p.relative_to(ROOT / "proto").with_suffix("") for p in (ROOT / "proto").rglob("*.proto"))
    assert protos, "no .proto files under proto/"
    for proto in protos:
        assert (COMMITTED / proto.parent / f"{proto.name}_pb2.py").is_file(), proto
