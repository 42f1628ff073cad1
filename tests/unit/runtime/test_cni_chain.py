"""The CNI driver against fake plugins (small executables that log how they were called):
chaining of results, ADD in order, DEL in reverse with the cached result, CHECK, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dataplane.runtime.cni import CniChain, CniError, find_plugin, parse_output
from dataplane.runtime.cni_config import Attachment, NetworkList, pod_args

pytestmark = pytest.mark.unit

FAKE = """#!{python}
import json, os, sys
conf = json.loads(sys.stdin.read() or "{{}}")
me = os.path.basename(sys.argv[0])
with open({log!r}, "a") as f:
    f.write(json.dumps({{"plugin": me, "env": dict(os.environ), "conf": conf}}) + "\\n")
command = os.environ["CNI_COMMAND"]
if conf.get("fail_on") == command:
    print(json.dumps({{"cniVersion": "1.0.0", "code": 7, "msg": "boom from " + me, "details": "d"}}))
    sys.exit(1)
if command == "VERSION":
    print(json.dumps({{"cniVersion": "1.0.0", "supportedVersions": ["1.0.0"]}}))
elif command == "ADD" and not conf.get("silent"):
    result = conf.get("prevResult") or {{"cniVersion": conf["cniVersion"], "interfaces": [], "ips": []}}
    result["interfaces"].append({{"name": me}})
    print(json.dumps(result))
"""


@pytest.fixture
def plugins(tmp_path: Path) -> tuple[Path, Path]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls.jsonl"
    for name in ("first", "second", "third"):
        exe = bindir / name
        exe.write_text(FAKE.format(python=sys.executable, log=str(log)))
        exe.chmod(0o755)
    return bindir, log


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def chain(bindir: Path, plugins: list[dict]) -> CniChain:
    net = NetworkList.from_json({"cniVersion": "1.0.0", "name": "mesh", "plugins": plugins})
    return CniChain(net, (str(bindir),), timeout=20)


ATT = Attachment("uid-1", "/var/run/netns/mesh-pod-uid1", "eth0", pod_args("ns", "p", "uid-1"))


async def test_add_chains_results_in_order(plugins: tuple[Path, Path]) -> None:
    bindir, log = plugins
    result = await chain(bindir, [{"type": "first"}, {"type": "second"}, {"type": "third"}]).add(ATT)
    assert [i["name"] for i in result["interfaces"]] == ["first", "second", "third"]
    seen = calls(log)
    assert [c["plugin"] for c in seen] == ["first", "second", "third"]
    assert "prevResult" not in seen[0]["conf"]
    assert [i["name"] for i in seen[2]["conf"]["prevResult"]["interfaces"]] == ["first", "second"]
    assert all(c["conf"]["name"] == "mesh" and c["conf"]["cniVersion"] == "1.0.0" for c in seen)


async def test_plugins_get_a_clean_environment(plugins: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    bindir, log = plugins
    monkeypatch.setenv("MESH_SECRET_SETTING", "leak")
    await chain(bindir, [{"type": "first"}]).add(ATT)
    env = calls(log)[0]["env"]
    assert "MESH_SECRET_SETTING" not in env
    assert env["CNI_COMMAND"] == "ADD" and env["CNI_CONTAINERID"] == "uid-1"
    assert env["CNI_NETNS"] == ATT.netns and env["CNI_IFNAME"] == "eth0"
    assert env["CNI_PATH"] == str(bindir)
    assert "K8S_POD_NAME=p" in env["CNI_ARGS"]


async def test_del_runs_in_reverse_with_the_cached_result(plugins: tuple[Path, Path]) -> None:
    bindir, log = plugins
    c = chain(bindir, [{"type": "first"}, {"type": "second"}, {"type": "third"}])
    cached = await c.add(ATT)
    log.unlink()
    assert await c.delete(ATT, cached) == []
    seen = calls(log)
    assert [s["plugin"] for s in seen] == ["third", "second", "first"]
    assert all(s["env"]["CNI_COMMAND"] == "DEL" and s["conf"]["prevResult"] == cached for s in seen)


async def test_check_runs_in_order_with_the_cached_result(plugins: tuple[Path, Path]) -> None:
    bindir, log = plugins
    c = chain(bindir, [{"type": "first"}, {"type": "second"}])
    cached = await c.add(ATT)
    log.unlink()
    await c.check(ATT, cached)
    seen = calls(log)
    assert [s["plugin"] for s in seen] == ["first", "second"]
    assert all(s["conf"]["prevResult"] == cached for s in seen)


async def test_a_failing_plugin_reports_code_and_msg(plugins: tuple[Path, Path]) -> None:
    bindir, _ = plugins
    with pytest.raises(CniError) as info:
        await chain(bindir, [{"type": "first"}, {"type": "second", "fail_on": "ADD"}]).add(ATT)
    assert (info.value.plugin, info.value.command, info.value.code) == ("second", "ADD", 7)
    assert info.value.msg == "boom from second" and "boom from second" in str(info.value)


async def test_del_calls_every_plugin_even_after_a_failure(plugins: tuple[Path, Path]) -> None:
    bindir, log = plugins
    c = chain(bindir, [{"type": "first"}, {"type": "second", "fail_on": "DEL"}, {"type": "third"}])
    errors = await c.delete(ATT, None)
    assert [e.plugin for e in errors] == ["second"]
    assert [s["plugin"] for s in calls(log)] == ["third", "second", "first"]


async def test_a_chained_plugin_that_prints_nothing_breaks_add(plugins: tuple[Path, Path]) -> None:
    bindir, _ = plugins
    with pytest.raises(CniError, match="printed no result"):
        await chain(bindir, [{"type": "first"}, {"type": "second", "silent": True}]).add(ATT)


async def test_missing_plugin(plugins: tuple[Path, Path]) -> None:
    bindir, _ = plugins
    with pytest.raises(CniError, match="no executable 'nope'"):
        await chain(bindir, [{"type": "nope"}]).add(ATT)


async def test_version(plugins: tuple[Path, Path]) -> None:
    bindir, log = plugins
    assert (await chain(bindir, [{"type": "first"}]).version("first"))["supportedVersions"] == ["1.0.0"]
    assert set(calls(log)[0]["env"]) >= {"CNI_COMMAND", "CNI_PATH"}


def test_find_plugin_takes_the_first_directory(tmp_path: Path) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        exe = tmp_path / d / "bridge"
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    assert find_plugin("bridge", (str(tmp_path / "missing"), str(tmp_path / "b"), str(tmp_path / "a"))) == (
        tmp_path / "b" / "bridge"
    )
    with pytest.raises(CniError):
        find_plugin("../bridge", (str(tmp_path / "a"),))


@pytest.mark.parametrize(
    ("rc", "stdout", "stderr", "code", "msg"),
    [
        (1, b'{"code": 11, "msg": "try again"}', b"", 11, "try again"),
        (2, b"", b"panic: oops", 999, "panic: oops"),
        (3, b"garbage", b"", 999, "exit status 3"),
    ],
)
def test_parse_output_errors(rc: int, stdout: bytes, stderr: bytes, code: int, msg: str) -> None:
    with pytest.raises(CniError) as info:
        parse_output("p", "ADD", rc, stdout, stderr)
    assert (info.value.code, info.value.msg) == (code, msg)


def test_parse_output_results() -> None:
    assert parse_output("p", "DEL", 0, b"", b"") is None
    assert parse_output("p", "ADD", 0, b'{"ips": []}', b"") == {"ips": []}
    with pytest.raises(CniError, match="not JSON"):
        parse_output("p", "ADD", 0, b"{", b"")
