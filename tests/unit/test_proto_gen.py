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


def test_slim_delta_xds_messages_match_envoys_numbers_and_types() -> None:
    """ztunnel's delta ADS messages (proto/xds/delta_discovery.proto) model a subset of Envoy's:
    every field they declare must have Envoy's number, type and cardinality, or the bytes on the
    wire would mean something else to mesh-xds (and to any xDS server)."""
    from envoy.config.core.v3 import base_pb2
    from envoy.service.discovery.v3 import discovery_pb2
    from google.protobuf import descriptor_pb2
    from google.rpc import status_pb2

    from mesh.proto_gen.xds import delta_discovery_pb2 as slim

    def shape(message) -> dict[str, tuple[int, int, bool, str]]:
        proto = descriptor_pb2.DescriptorProto()
        message.DESCRIPTOR.CopyToProto(proto)
        repeated = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
        return {f.name: (f.number, f.type, f.label == repeated, f.type_name.rsplit(".", 1)[-1]) for f in proto.field}

    pairs = [
        (slim.Node, base_pb2.Node),
        (slim.Status, status_pb2.Status),
        (slim.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryRequest),
        (slim.Resource, discovery_pb2.Resource),
        (slim.DeltaDiscoveryResponse, discovery_pb2.DeltaDiscoveryResponse),
    ]
    for ours, envoys in pairs:
        mine, theirs = shape(ours), shape(envoys)
        for name, field in mine.items():
            assert name in theirs, f"{ours.DESCRIPTOR.name}.{name} is not in Envoy's message"
            assert field == theirs[name], f"{ours.DESCRIPTOR.name}.{name}: {field} vs Envoy's {theirs[name]}"


def test_slim_delta_request_decodes_as_envoys() -> None:
    """A request built with the slim messages reads back field for field through Envoy's."""
    from envoy.service.discovery.v3 import discovery_pb2

    from mesh.proto_gen.xds import delta_discovery_pb2 as slim

    request = slim.DeltaDiscoveryRequest(
        type_url="type.googleapis.com/istio.workload.Address",
        resource_names_subscribe=["a", "b"],
        initial_resource_versions={"a": "1"},
        response_nonce="n1",
    )
    request.node.id = "ztunnel~198.19.0.1~node-1"
    request.node.metadata.fields["NAMESPACE"].string_value = "istio-system"
    request.error_detail.code = 3
    request.error_detail.message = "bad: reason"
    envoy = discovery_pb2.DeltaDiscoveryRequest.FromString(request.SerializeToString())
    assert envoy.node.id == "ztunnel~198.19.0.1~node-1"
    assert envoy.node.metadata.fields["NAMESPACE"].string_value == "istio-system"
    assert list(envoy.resource_names_subscribe) == ["a", "b"]
    assert dict(envoy.initial_resource_versions) == {"a": "1"}
    assert (envoy.response_nonce, envoy.error_detail.code, envoy.error_detail.message) == ("n1", 3, "bad: reason")
