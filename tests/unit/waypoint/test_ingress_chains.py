"""Ingress chain choice by SNI and the listener port diff (ingress/chains.py): pure tables."""

from __future__ import annotations

import pytest

from dataplane.waypoint.config import FilterChain
from dataplane.waypoint.ingress.chains import choose_chain, port_changes, uses_tls
from dataplane.waypoint.ingress.tls_config import DownstreamTls


def chain(name: str, *names: str, tls: bool = True) -> FilterChain:
    return FilterChain(
        name=name,
        vips=frozenset(),
        port=443,
        codec="auto",
        stat_prefix=name,
        route_config_name="gateway|ns|gw|443",
        server_names=names,
        tls=DownstreamTls((f"kubernetes://ns/{name}",)) if tls else None,
    )


EXACT = chain("exact", "web.example.com")
WILD = chain("wild", "*.example.com")
DEEP = chain("deep", "*.api.example.com")
DEFAULT = chain("default")
ALL = (WILD, DEEP, EXACT, DEFAULT)


@pytest.mark.parametrize(
    ("sni", "chosen"),
    [
        ("web.example.com", EXACT),  # exact beats any wildcard, wherever it is listed
        ("WEB.example.com.", EXACT),  # case and a trailing dot do not matter
        ("shop.example.com", WILD),
        ("a.b.example.com", WILD),  # a wildcard matches any number of labels
        ("v1.api.example.com", DEEP),  # the longest wildcard suffix wins
        ("example.com", DEFAULT),  # `*.example.com` does not match the bare domain
        ("other.org", DEFAULT),
        (None, DEFAULT),  # no SNI: the default chain
        ("", DEFAULT),
    ],
)
def test_chain_by_server_name(sni: str | None, chosen: FilterChain) -> None:
    assert choose_chain(ALL, sni) is chosen


def test_no_match_and_no_default_is_none() -> None:
    assert choose_chain((EXACT, WILD), "other.org") is None
    assert choose_chain((EXACT,), None) is None
    assert choose_chain((), "web.example.com") is None


def test_first_default_serves() -> None:
    second = chain("second")
    assert choose_chain((DEFAULT, second), "x.org") is DEFAULT


def test_a_port_uses_tls_when_a_chain_has_it() -> None:
    assert uses_tls((chain("plain", tls=False), EXACT))
    assert not uses_tls((chain("plain", tls=False),))
    assert not uses_tls(())


@pytest.mark.parametrize(
    ("listening", "wanted", "opened", "closed"),
    [
        ((), (80, 443), (80, 443), ()),
        ((80, 443), (443, 8443), (8443,), (80,)),
        ((80,), (80,), (), ()),
        ((443, 80), (), (), (80, 443)),
    ],
)
def test_port_changes(listening: tuple, wanted: tuple, opened: tuple, closed: tuple) -> None:
    changes = port_changes(listening, wanted)
    assert (changes.open, changes.close) == (opened, closed)


def test_port_changes_takes_the_store_mapping() -> None:
    assert port_changes({80: object()}, {443: (EXACT,)}).open == (443,)
