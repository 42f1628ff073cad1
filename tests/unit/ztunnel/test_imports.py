"""ztunnel's memory budget depends on what it imports: grpcio, pydantic, prometheus_client or the
full xds-protos tree must not creep back in."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "grpc",
    "pydantic",
    "pydantic_core",
    "pydantic_settings",
    "fastapi",
    "sqlalchemy",
    "httpx",
    "prometheus_client",  # its package import loads http.server, urllib.request, wsgiref, email
    "envoy",  # the full xds-protos tree; ztunnel speaks delta ADS with proto/xds/delta_discovery.proto
    "udpa",
    "tempfile",  # with shutil, bz2 and lzma, about 1 MB: ctypes.util.find_library would bring it
    "tracemalloc",  # and pickle's friends; /debug/memory imports it only when tracing
)


def test_ztunnel_loads_none_of_the_heavy_packages() -> None:
    probe = (
        "import sys, json, dataplane.ztunnel.__main__; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True).stdout))
    assert "grpclib" in loaded and "h2" in loaded  # the probe saw ztunnel's real imports
    assert loaded.isdisjoint(HEAVY), sorted(loaded.intersection(HEAVY))
