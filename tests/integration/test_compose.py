"""docker-compose.yml and the Dockerfile, checked without Docker (docs/compose.md).

- the file validates against the Compose Specification's JSON schema (taken from the
  docker-compose 1.29.2 wheel on PyPI, downloaded once into .venv and read with zipfile);
- `docker compose config` accepts it, where a docker CLI with compose exists;
- every command it runs is one of the project's console scripts (or a script the image holds) and
  accepts every flag passed; every variable it sets is one the process's settings read, and each
  process's settings accept the values;
- the Dockerfile copies files that exist and that .dockerignore does not drop;
- the addresses stay in 198.18.0.0/15; long-running services have health checks;
- mesh-node registers a node against a real istiod as `meshctl cluster up` does.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from cli import node_main
from services.ca.settings import CaSettings
from services.istiod.settings import IstiodSettings
from services.worker.settings import WorkerSettings
from services.xds.settings import XdsSettings
from tests import harness

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).parent
SPEC_WHEEL = "docker-compose==1.29.2"
SPEC_CACHE = ROOT / ".venv" / "cache" / "compose-spec"
SPEC_MEMBER = "compose/config/compose_spec.json"

# The settings each console script reads (one settings object per process, DESIGN §2).
SETTINGS: dict[str, type[BaseSettings]] = {
    "istiod": IstiodSettings,
    "mesh-ca": CaSettings,
    "mesh-xds": XdsSettings,
    "mesh-worker": WorkerSettings,
    "mesh-node": node_main.NodeSettings,
}
# The demo script reads MESH_STATE_DIR and MESH_ISTIOD, as every process does.
SCRIPT_ENV = {"MESH_STATE_DIR", "MESH_ISTIOD"}
CLUSTER = ipaddress.ip_network("198.18.0.0/15")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def our_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the project's image (the others are redis and postgres)."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}`, with the defaults (what `docker compose up` uses unset)."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m.group(1), m.group(2)), value)


def env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads."""
    prefix = cls.model_config.get("env_prefix", "")
    names: set[str] = set()
    for field, info in cls.model_fields.items():
        alias = info.validation_alias
        if alias is not None and hasattr(alias, "choices"):
            names |= {str(c).upper() for c in alias.choices}
        else:
            names.add(f"{prefix}{field}".upper())
    return names


# --- (a) the Compose Specification's schema --------------------------------------------------------


def compose_spec() -> dict[str, Any]:
    """The schema from the docker-compose wheel, downloaded once (reruns are offline)."""
    wheels = sorted(SPEC_CACHE.glob("docker_compose-1.29.2-*.whl"))
    if not wheels:
        SPEC_CACHE.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", SPEC_WHEEL, "-d", str(SPEC_CACHE)]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        except subprocess.TimeoutExpired:
            pytest.skip(f"pip could not download {SPEC_WHEEL} within 180 s (no network?)")
        wheels = sorted(SPEC_CACHE.glob("docker_compose-1.29.2-*.whl"))
        if result.returncode != 0 or not wheels:
            last = (result.stderr.strip().splitlines() or ["?"])[-1]
            pytest.skip(f"pip could not download {SPEC_WHEEL} (no network?): {last}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        return json.loads(wheel.read(SPEC_MEMBER))


def schema_errors(schema: dict[str, Any], document: Any) -> list[str]:
    """Validation errors, with the validator the schema's `$schema` draft asks for."""
    try:
        import jsonschema
    except ImportError:  # schemathesis 4 brings jsonschema_rs rather than jsonschema
        import jsonschema_rs

        return [
            f"{list(e.instance_path)}: {e.message}" for e in jsonschema_rs.validator_for(schema).iter_errors(document)
        ]
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def test_the_file_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = compose_spec()
    assert schema_errors(schema, compose) == []
    # The validator does see mistakes: an unknown service key and a wrong depends_on condition.
    broken = json.loads(json.dumps(compose))
    broken["services"]["istiod"]["listen"] = "0.0.0.0:6443"
    broken["services"]["demo"]["depends_on"]["node-1"]["condition"] = "healthy"
    errors = schema_errors(schema, broken)
    assert errors and any("listen" in e for e in errors), errors


# --- (b) docker compose config ---------------------------------------------------------------------


def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("no docker CLI with the compose plugin on this machine")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr


# --- (c) commands, flags and environment -------------------------------------------------------------


def console_scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_command_is_a_console_script_that_accepts_its_flags(compose: dict[str, Any]) -> None:
    scripts = console_scripts()
    for name, svc in our_services(compose).items():
        command = svc["command"]
        if command[0] == "bash":  # a script the image holds (checked with the Dockerfile below)
            assert (ROOT / command[1]).is_file(), f"{name}: {command[1]} does not exist"
            continue
        assert command[0] in scripts, f"{name}: {command[0]} is not a console script in pyproject.toml"
        helped = subprocess.run([str(BIN / command[0]), "--help"], capture_output=True, text=True, timeout=60)
        assert helped.returncode == 0, f"{name}: {command[0]} --help failed: {helped.stderr}"
        for flag in (a.split("=", 1)[0] for a in command[1:] if a.startswith("--")):
            assert re.search(rf"{re.escape(flag)}\b", helped.stdout), f"{name}: {command[0]} has no {flag}"


def test_every_variable_set_is_read_by_the_process(compose: dict[str, Any]) -> None:
    every = set().union(*(env_names(cls) for cls in SETTINGS.values()))
    for name, svc in our_services(compose).items():
        program = svc["command"][0]
        known = env_names(SETTINGS[program]) if program in SETTINGS else SCRIPT_ENV & every
        unknown = set(svc.get("environment") or {}) - known
        assert not unknown, f"{name} sets {sorted(unknown)}, which {program} does not read"


@pytest.mark.parametrize("service", ["istiod", "mesh-ca", "mesh-xds", "mesh-worker", "node-1", "node-2"])
def test_each_process_accepts_the_values_it_is_given(
    compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("MESH_") or k in ("DATABASE_URL", "REDIS_URL")]:
        monkeypatch.delenv(key)
    svc = compose["services"][service]
    for key, value in (svc.get("environment") or {}).items():
        monkeypatch.setenv(key, interpolate(str(value)))
    settings = SETTINGS[svc["command"][0]]()  # parses and validates every variable, lists as JSON
    if isinstance(settings, node_main.NodeSettings):
        config = node_main.resolve(settings)
        assert config.node_ip == svc["networks"]["mesh"]["ipv4_address"]
        assert ipaddress.ip_network(config.pod_cidr).subnet_of(ipaddress.ip_network("198.18.0.0/16"))
    if isinstance(settings, IstiodSettings):
        assert settings.database_url and settings.database_url.startswith("postgresql://")
        assert settings.listen == "0.0.0.0:6443" and not settings.insecure_http


# --- (d) the Dockerfile --------------------------------------------------------------------------------


def dockerignored(path: str) -> bool:
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()[:1] not in ("", "#")
    ]
    return any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns)


def dockerfile_copies() -> list[str]:
    sources: list[str] = []
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"]:
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def test_the_dockerfile_copies_files_that_exist_and_reach_the_build() -> None:
    sources = dockerfile_copies()
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim-bookworm$", text, re.M)
    for package in ("iproute2", "iptables", "containernetworking-plugins", "util-linux", "curl"):
        assert package in text
    # Every package pyproject installs, and what the demo job runs, are in the image.
    for package in ("mesh", "services", "dataplane", "cli", "samples", "scripts/compose-demo.sh"):
        assert package in sources, f"the image lacks {package}"


# --- addresses and health -------------------------------------------------------------------------------


def test_addresses_stay_in_the_cluster_range(compose: dict[str, Any]) -> None:
    ipam = compose["networks"]["mesh"]["ipam"]["config"][0]
    subnet, dynamic = ipaddress.ip_network(ipam["subnet"]), ipaddress.ip_network(ipam["ip_range"])
    assert subnet.subnet_of(ipaddress.ip_network("198.19.254.0/24")) and dynamic.subnet_of(subnet)
    fixed = [
        ipaddress.ip_address(svc["networks"]["mesh"]["ipv4_address"])
        for svc in compose["services"].values()
        if isinstance(svc.get("networks"), dict)
    ]
    assert len(fixed) == len(set(fixed)) >= 5
    assert all(ip in subnet and ip not in dynamic for ip in fixed)
    pods = [
        ipaddress.ip_network(svc["environment"]["MESH_POD_CIDR"])
        for n, svc in compose["services"].items()
        if n.startswith("node-")
    ]
    assert len(pods) == 2 and not pods[0].overlaps(pods[1])
    assert all(p.subnet_of(CLUSTER) for p in pods)
    assert ipaddress.ip_network(compose["services"]["istiod"]["environment"]["MESH_SERVICE_CIDR"]).subnet_of(CLUSTER)


def test_long_running_services_have_health_checks_and_start_in_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        if name != "demo":
            assert "healthcheck" in svc, f"{name} has no health check"
        for target, dep in (svc.get("depends_on") or {}).items():
            assert dep["condition"] in ("service_healthy", "service_completed_successfully"), (name, target)
            if dep["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}, which has no health check"
    for node in ("node-1", "node-2"):
        svc = services[node]
        assert svc["privileged"] is True and "NET_ADMIN" in svc["cap_add"] and svc["user"] == "0:0"
        assert "15021/healthz/ready" in " ".join(svc["healthcheck"]["test"])
    assert set(services["demo"]["depends_on"]) >= {"node-1", "node-2"} and services["demo"]["restart"] == "no"
    assert "/readyz" in " ".join(services["istiod"]["healthcheck"]["test"])
    assert "/readyz" in " ".join(services["mesh-xds"]["healthcheck"]["test"])


# --- mesh-node against a real istiod ---------------------------------------------------------------------


def test_mesh_node_registers_its_node_as_cluster_up_does(tmp_path: Path) -> None:
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    harness.need("redis", harness.port_open("127.0.0.1", 6379), f"nothing answers at {redis_url}")
    with harness.running_istiod(tmp_path, "sqlite", redis_url) as istiod:
        settings = node_main.NodeSettings(
            name="node-7",
            pod_cidr="198.18.7.0/24",
            node_ip="198.19.254.27",
            istiod=istiod.url,
            istiod_ca_file=istiod.ca_file,
            ca="198.19.254.11:15012",
            xds="198.19.254.12:15010",
            root_cert=istiod.state_dir / "root-cert.pem",
            bootstrap_token_file=istiod.state_dir / "admin-token",
            state_dir=tmp_path / "node",
        )
        config = node_main.resolve(settings)
        node_main.register(config)
        token = config.token_file.read_text().strip()
        assert config.token_file.stat().st_mode & 0o777 == 0o600 and token
        info = json.loads((config.state_dir / "node.json").read_text())
        assert info["ip"] == "198.19.254.27" and info["xds_mtls"] == "198.19.254.12:15013"
        conflist = json.loads((config.state_dir / "cni" / "net.d" / "10-mesh.conflist").read_text())
        assert conflist["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "198.18.7.0/24", "gateway": "198.18.7.1"}]]
        with istiod.client(token=token) as client:  # the node token works
            node = client.get("/api/v1/nodes/node-7").json()
        assert node["spec"]["podCIDR"] == "198.18.7.0/24"
        node_main.register(config)  # a restart keeps the token
        assert config.token_file.read_text().strip() == token
