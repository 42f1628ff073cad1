"""Unit tests for services.istiod.auth (tokens, roles) and mesh.settings (flags and environment).

Who may call istiod is decided here, so each rule is pinned: how a token file line becomes a
principal, what a reader may do, and that every bad credential is a 401. Settings errors must
name the setting and the reason in one line, as an operator reads them in a unit's log.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mesh.settings import host_port, parse_settings
from services.istiod.auth import ADMIN, READER, Authenticator, Principal, ensure_token_file, may
from services.istiod.errors import ApiError
from services.istiod.settings import IstiodSettings

pytestmark = pytest.mark.unit

# --- static token file ---------------------------------------------------------------------------


def load(tmp_path: Path, text: str) -> Authenticator:
    path = tmp_path / "tokens.csv"
    path.write_text(text)
    auth = Authenticator()
    auth.load_token_file(path)
    return auth


def test_token_file_lines_become_principals(tmp_path: Path) -> None:
    auth = load(
        tmp_path,
        "# token,user,uid,groups\n"
        "\n"
        't-admin,alice,1001,"system:masters,dev"\n'
        't-dev,bob,1002,"dev,ops"\n'
        "t-plain,carol\n"
        't-spaced , dave ,1004," ops , system:masters "\n',
    )
    assert auth.authenticate("Bearer t-admin") == Principal("alice", ADMIN, ("system:masters", "dev"))
    assert auth.authenticate("Bearer t-dev") == Principal("bob", READER, ("dev", "ops"))
    assert auth.authenticate("Bearer t-plain") == Principal("carol", READER, ())
    assert auth.authenticate("Bearer t-spaced") == Principal("dave", ADMIN, ("ops", "system:masters"))


def test_a_group_merely_containing_masters_is_not_admin(tmp_path: Path) -> None:
    auth = load(tmp_path, 't1,eve,1,"system:masters-not,my-system:masters"\n')
    assert auth.authenticate("Bearer t1").role == READER


def test_a_malformed_line_names_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"tokens\.csv:3: expected token,user"):
        load(tmp_path, "t1,alice\n# fine so far\nonly-a-token\nt2,bob\n")


def test_an_empty_token_in_the_file_never_authenticates(tmp_path: Path) -> None:
    auth = load(tmp_path, ',mallory,1,"system:masters"\n  ,oscar\n')
    for header in ("Bearer ", "Bearer", "bearer  ", "Bearer \t"):
        with pytest.raises(ApiError) as info:
            auth.authenticate(header)
        assert info.value.code == 401


# --- generated token files -----------------------------------------------------------------------


def test_ensure_token_file_creates_a_private_random_token(tmp_path: Path) -> None:
    path = tmp_path / "admin-token"
    token = ensure_token_file(path)
    assert len(token) >= 40  # 256 bits, URL-safe base64
    assert path.read_text() == token + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_token_file(tmp_path / "reader-token") != token


def test_ensure_token_file_reuses_an_existing_token(tmp_path: Path) -> None:
    path = tmp_path / "admin-token"
    first = ensure_token_file(path)
    assert ensure_token_file(path) == first
    path.write_text("chosen-by-operator\n")
    assert ensure_token_file(path) == "chosen-by-operator"


def test_ensure_token_file_replaces_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "admin-token"
    path.write_text("\n")
    path.chmod(0o644)
    token = ensure_token_file(path)
    assert token
    assert path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- authorization rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "verb", "allowed"),
    [
        (ADMIN, "create", True),
        (ADMIN, "delete", True),
        (ADMIN, "deletecollection", True),
        (ADMIN, "get", True),
        (READER, "get", True),
        (READER, "list", True),
        (READER, "watch", True),
        (READER, "create", False),
        (READER, "update", False),
        (READER, "patch", False),
        (READER, "delete", False),
        (READER, "deletecollection", False),
        ("node", "get", True),  # node proxies read (their writes come with the node runtime)
        ("node", "create", False),
        ("node", "delete", False),
        ("stranger", "get", False),  # an unknown role gets nothing
    ],
)
def test_may(role: str, verb: str, allowed: bool) -> None:
    assert may(Principal("someone", role), verb) is allowed


# --- bearer authentication -----------------------------------------------------------------------


@pytest.fixture
def auth() -> Authenticator:
    a = Authenticator()
    a.add("s3cret", Principal("admin", ADMIN, ("system:masters",)))
    return a


def test_a_known_bearer_token_authenticates(auth: Authenticator) -> None:
    assert auth.authenticate("Bearer s3cret").user == "admin"
    assert auth.authenticate("bearer s3cret").user == "admin"  # the scheme is case-insensitive


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Bearer wrong", "Bearer s3cret-and-more", "Basic YWRtaW46czNjcmV0", "s3cret"],
)
def test_missing_basic_or_unknown_credentials_are_401(auth: Authenticator, header: str | None) -> None:
    with pytest.raises(ApiError) as info:
        auth.authenticate(header)
    assert (info.value.code, info.value.reason) == (401, "Unauthorized")


def test_extra_verifiers_are_asked_only_for_unknown_tokens(auth: Authenticator) -> None:
    asked: list[str] = []

    def verify(token: str) -> Principal | None:
        asked.append(token)
        return Principal("node-1", READER) if token == "node-jwt" else None

    auth.extra.append(verify)
    assert auth.authenticate("Bearer s3cret").user == "admin"
    assert auth.authenticate("Bearer node-jwt").user == "node-1"
    with pytest.raises(ApiError):
        auth.authenticate("Bearer forged")
    assert asked == ["node-jwt", "forged"]


# --- settings ------------------------------------------------------------------------------------

ENV_NAMES = ("DATABASE_URL", "REDIS_URL")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No MESH_* (or aliased) variable from the machine running the tests."""
    for name in list(os.environ):
        if name.upper().startswith("MESH_") or name.upper() in ENV_NAMES:
            monkeypatch.delenv(name)
    return monkeypatch


def parse(argv: list[str]) -> IstiodSettings:
    return parse_settings(IstiodSettings, "istiod", "test", argv)


def test_every_field_is_a_flag(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(["--help"])
    assert info.value.code == 0
    help_text = capsys.readouterr().out
    for name in IstiodSettings.model_fields:
        assert "--" + name.replace("_", "-") in help_text, name


def test_defaults_without_flags_or_environment(clean_env: pytest.MonkeyPatch) -> None:
    s = parse([])
    assert (s.listen, s.service_cidr, s.insecure_http, s.tls_san) == ("127.0.0.1:6443", "198.19.0.0/17", False, [])
    assert s.effective_database_url == f"sqlite:///{s.state_dir / 'istiod.db'}"


def test_flags_set_every_kind_of_field(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = parse(
        [
            "--state-dir", str(tmp_path),
            "--listen", "0.0.0.0:7443",
            "--insecure-http",
            "--tls-san", "istiod.example", "--tls-san", "203.0.113.7",
            "--watch-history", "200",
            "--bookmark-interval", "2.5",
            "--database-url", "postgresql://mesh@db/mesh",
        ]
    )  # fmt: skip
    assert s.state_dir == tmp_path
    assert s.listen == "0.0.0.0:7443"
    assert s.insecure_http is True
    assert s.scheme == "http"
    assert s.tls_san == ["istiod.example", "203.0.113.7"]
    assert (s.watch_history, s.bookmark_interval) == (200, 2.5)
    assert s.effective_database_url == "postgresql://mesh@db/mesh"


def test_environment_is_read_and_flags_beat_it(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("MESH_LISTEN", "127.0.0.1:7000")
    clean_env.setenv("MESH_WATCH_HISTORY", "300")
    clean_env.setenv("DATABASE_URL", "postgresql://from-env/db")
    clean_env.setenv("REDIS_URL", "redis://10.0.0.1:6379/1")
    s = parse(["--listen", "127.0.0.1:8000"])
    assert s.listen == "127.0.0.1:8000"
    assert s.watch_history == 300
    assert s.database_url == "postgresql://from-env/db"
    assert s.redis_url == "redis://10.0.0.1:6379/1"
    assert parse(["--database-url", "sqlite:///x.db"]).database_url == "sqlite:///x.db"


@pytest.mark.parametrize(
    ("argv", "env", "line"),
    [
        (
            ["--listen", "nonsense"],
            {},
            "istiod: MESH_LISTEN=nonsense (expected HOST:PORT, got 'nonsense')",
        ),
        (
            [],
            {"MESH_LISTEN": "127.0.0.1:99999"},
            "istiod: MESH_LISTEN=127.0.0.1:99999 (expected HOST:PORT",
        ),
        (["--watch-history", "5"], {}, "istiod: MESH_WATCH_HISTORY=5 (Input should be greater than or equal to 100)"),
        (
            ["--service-cidr", "10.0.0.0/30"],
            {},
            "istiod: MESH_SERVICE_CIDR=10.0.0.0/30 (the service range",
        ),
        (["--service-cidr", "10.0.0.300/16"], {}, "istiod: MESH_SERVICE_CIDR=10.0.0.300/16 ("),
        ([], {"MESH_INSECURE_HTTP": "maybe"}, "istiod: MESH_INSECURE_HTTP=maybe (Input should be a valid boolean"),
        ([], {"MESH_TLS_SAN": "istiod.example"}, "istiod: MESH_TLS_SAN=istiod.example ("),
    ],
)
def test_a_bad_value_exits_2_with_one_line(
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    line: str,
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(line)
    assert err.endswith(")\n")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:6443", ("127.0.0.1", 6443)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        (":8080", ("127.0.0.1", 8080)),
        ("[::1]:6443", ("::1", 6443)),
        ("[::]:15014", ("::", 15014)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_host_port_splits(value: str, expected: tuple[str, int]) -> None:
    assert host_port(value) == expected


def test_host_port_default_host() -> None:
    assert host_port(":9000", default_host="0.0.0.0") == ("0.0.0.0", 9000)


@pytest.mark.parametrize("value", ["", "6443", "localhost", "host:", "host:65536", "host:-1", "host:80a", "[::1]"])
def test_host_port_refuses(value: str) -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        host_port(value)
