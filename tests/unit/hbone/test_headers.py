"""HBONE request fields: `:authority`, `forwarded`, `baggage`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.hbone.headers import AuthorityError, baggage_header, format_authority, forwarded_header, parse_authority

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("authority", "parsed"),
    [
        ("10.0.0.2:8080", ("10.0.0.2", 8080)),
        ("[fd00::2]:15008", ("fd00::2", 15008)),
        ("web-api.default.svc.cluster.local:80", ("web-api.default.svc.cluster.local", 80)),
    ],
)
def test_parse_authority(authority: str, parsed: tuple[str, int]) -> None:
    assert parse_authority(authority) == parsed
    assert format_authority(*parsed) == authority


@pytest.mark.parametrize(
    "authority",
    ["", "10.0.0.2", ":80", "10.0.0.2:", "10.0.0.2:0", "10.0.0.2:65536", "10.0.0.2:http", "fd00::2:80", "[fd00::2:80",
     "[nonsense]:80", "a b:80", "x/y:80"],
)  # fmt: skip
def test_bad_authorities_are_refused(authority: str) -> None:
    with pytest.raises(AuthorityError):
        parse_authority(authority)


@given(st.ip_addresses(), st.integers(1, 65535))
def test_authority_round_trip(address: object, port: int) -> None:
    host = str(address)
    assert parse_authority(format_authority(host, port)) == (host, port)


def test_forwarded_header() -> None:
    # RFC 7239 §6: a node with a port, or an IPv6 node, is a quoted string.
    assert forwarded_header("10.0.0.1", 4000) == 'for="10.0.0.1:4000"'
    assert forwarded_header("fd00::1", 4000, host="web.default") == 'for="[fd00::1]:4000";host=web.default'
    assert forwarded_header("10.0.0.1") == 'for="10.0.0.1"'


def test_baggage_header() -> None:
    value = baggage_header(
        {"k8s.namespace.name": "default", "k8s.pod.name": "sleep-1", "service.version": "", "cloud.region": "eu west"}
    )
    assert value == "k8s.namespace.name=default,k8s.pod.name=sleep-1,cloud.region=eu%20west"
