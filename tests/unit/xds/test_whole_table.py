"""A table sent whole: every wildcard stream that sees everything and holds nothing gets the same
serialized response (only the nonce differs) and shares one record of what it holds, and that
record behaves as the client's own afterwards (pushes, NACKs, removals)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from services.xds.hub import Hub, Presliced
from services.xds.peers import Peer
from services.xds.protocol import KnownVersions, Request, Resource, Subscription, Table, all_visible
from services.xds.types import ADDRESS

pytestmark = pytest.mark.unit


def table(version: int, **resources: str) -> Table:
    t = Table(version=version)
    for name, content in resources.items():
        t.resources[name] = Resource(name, content, any_pb2.Any(type_url="x", value=content.encode()))
    return t


def test_known_versions_reads_through_to_the_base_and_keeps_its_own_changes() -> None:
    base = {"a": "1", "b": "1", "c": "1"}
    known = KnownVersions(base)
    known["b"] = "2"
    known["d"] = "1"
    del known["c"]
    assert known.pop("a") == "1" and "a" not in known
    assert dict(known) == {"b": "2", "d": "1"} and len(known) == 2
    assert known.get("c") is None and known.get("b") == "2"
    assert base == {"a": "1", "b": "1", "c": "1"}  # shared: never written
    with pytest.raises(KeyError):
        del known["zz"]


def test_a_whole_send_is_recorded_shared_and_undone_by_a_nack() -> None:
    t = table(1, a="1", b="1")
    sub = Subscription()
    sub.on_request(Request(), first=True)
    assert sub.takes_whole(t, all_visible)
    assert not sub.takes_whole(t, lambda _n: True)  # an unknown filter may hide something
    sub.sent_whole(t, "n1")
    assert dict(sub.known) == {"a": "1", "b": "1"} and sub.known._base is t.versions()  # type: ignore[attr-defined]
    assert not sub.takes_whole(t, all_visible)  # it holds something now
    sub.on_request(Request(nonce="n1", error="bad"), first=False)
    assert not sub.known and sub.last_nack == "bad"
    # a reconnect that says what it holds is not sent the table whole
    again = Subscription()
    again.on_request(Request(initial_versions={"a": "1"}), first=True)
    assert not again.takes_whole(t, all_visible)
    assert [r.name for r in again.compute(t, all_visible).resources] == ["b"]


def test_after_a_whole_send_pushes_carry_only_changes() -> None:
    t1, t2 = table(1, a="1", b="1"), table(2, a="1", b="2", c="1")
    sub = Subscription()
    sub.on_request(Request(), first=True)
    sub.sent_whole(t1, "n1")
    sub.on_request(Request(nonce="n1"), first=False)
    push = sub.compute(t2, all_visible, {"b", "c"})
    assert [r.name for r in push.resources] == ["b", "c"] and not push.removed
    sub.sent(push, "n2", 2)
    gone = table(3, a="1", c="1")
    removal = sub.compute(gone, all_visible, {"b"})
    assert removal.removed == ("b",) and not removal.resources


async def _next(conn, timeout: float = 1.0):
    return await asyncio.wait_for(conn.out.get(), timeout)


async def test_streams_share_one_serialized_table_and_differ_only_in_the_nonce() -> None:
    hub = Hub()
    t = table(7, **{f"ns/w{i}": str(i) for i in range(50)})
    hub.publish(ADDRESS, t, None)
    conns = [hub.new_connection(Peer("ztunnel", node=f"node-{i}")) for i in range(2)]
    pumps = [asyncio.create_task(hub.pump(c)) for c in conns]
    try:
        for conn in conns:
            hub.on_request(conn, ADDRESS, Request())
        first, second = [await _next(c) for c in conns]
        assert isinstance(first, Presliced) and first.prefix is second.prefix  # one copy for all
        a, b = (discovery_pb2.DeltaDiscoveryResponse.FromString(x.join()) for x in (first, second))
        assert a.nonce == conns[0].subs[ADDRESS].nonce and b.nonce == conns[1].subs[ADDRESS].nonce
        assert a.nonce != b.nonce and a.type_url == ADDRESS and a.system_version_info == "7"
        assert [r.name for r in a.resources] == sorted(t.resources) and a.resources == b.resources
        assert {r.name: r.version for r in a.resources} == t.versions()
        assert conns[0].bytes_sent == len(first)
        # the ACK, then a change: an ordinary computed push with only what changed
        hub.on_request(conns[0], ADDRESS, Request(nonce=a.nonce))
        hub.publish(ADDRESS, table(8, **{**{f"ns/w{i}": str(i) for i in range(50)}, "ns/w3": "x"}), {"ns/w3"})
        push = await _next(conns[0])
        assert [r.name for r in push.resources] == ["ns/w3"] and push.resources[0].version == "x"
    finally:
        for pump in pumps:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
