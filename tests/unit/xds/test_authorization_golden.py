"""Golden-file tests of the AuthorizationPolicy and PeerAuthentication translation for ztunnel.

Each case in tests/golden/xds/authorization/ is a YAML file of objects (Istio-documented policies,
plus pods where a case is about which workloads list which policy) and a `.json` file holding what
the Translator makes of them:
- `authorizations`: every Authorization resource by name, as MessageToJson would print it with
  proto field names (addresses shown as IPs, `scope`, `action` and `rules` always present);
- `conditions`: the conditions of each policy: ZtunnelAccepted for a policy sent to ztunnel (or
  refused by it), WaypointAccepted for a policy with targetRefs;
- `workload_policies`: each workload's `authorization_policies`, when the case has workloads.

After a deliberate change to the translation, regenerate the expected files with

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/xds/test_authorization_golden.py

and review the diff: it is the change users will see.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf.json_format import MessageToDict

from mesh.proto_gen.istio.security import authorization_pb2 as authz
from mesh.proto_gen.istio.workload import workload_pb2 as wl
from services.xds.generators import Translator
from services.xds.model import AUTHORIZATION_POLICIES, PEER_AUTHENTICATIONS
from tests.unit.xds.objects import Cluster

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "xds" / "authorization"
CASES = sorted(p.stem for p in GOLDEN.glob("*.yaml"))
_KIND_NAMES = {AUTHORIZATION_POLICIES: "AuthorizationPolicy", PEER_AUTHENTICATIONS: "PeerAuthentication"}


def _readable(value: Any) -> Any:
    """Show the base64 `address` bytes of MessageToDict as IP text."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "address" and isinstance(v, str):
                v = str(ipaddress.ip_address(base64.b64decode(v)))
            out[k] = _readable(v)
        return out
    if isinstance(value, list):
        return [_readable(v) for v in value]
    return value


def _authorization(message: authz.Authorization) -> dict[str, Any]:
    out = _readable(MessageToDict(message, preserving_proto_field_name=True))
    # Zero values are left out by MessageToDict; these three are what a reader looks for first.
    out["scope"] = authz.Scope.Name(message.scope)
    out["action"] = authz.Action.Name(message.action)
    out.setdefault("rules", [])
    return out


def render(case: str) -> str:
    """The expected-file text of one case."""
    documents = [d for d in yaml.safe_load_all((GOLDEN / f"{case}.yaml").read_text()) if d]
    translator = Translator()
    translator.rebuild(Cluster(*documents).store)
    out: dict[str, Any] = {
        "authorizations": {name: _authorization(m) for name, m in translator.authorizations.items()},
        "conditions": {
            f"{_KIND_NAMES[key.kind]} {key.namespace}/{key.name}": conditions
            for key, conditions in translator.conditions.items()
            if key.kind in _KIND_NAMES
        },
    }
    workloads = {
        name: list(m.authorization_policies) for name, m in translator.addresses.items() if isinstance(m, wl.Workload)
    }
    if workloads:
        out["workload_policies"] = workloads
    return json.dumps(out, indent=2, sort_keys=True) + "\n"


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    expected_file = GOLDEN / f"{case}.json"
    actual = render(case)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        expected_file.write_text(actual)
        return
    assert expected_file.exists(), f"no {expected_file.name}: run with UPDATE_GOLDEN=1 and review it"
    assert actual == expected_file.read_text()


def test_every_expectation_has_a_case_and_there_are_enough() -> None:
    expectations = sorted(p.stem for p in GOLDEN.glob("*.json"))
    assert expectations == CASES
    assert len(CASES) >= 15
