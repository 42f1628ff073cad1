"""The state-of-the-world xDS state machine (services/xds/sotw.py), one test per rule of
../shared/reference/grpc-proxyless-xds.md "Rules for a state-of-the-world server", and the hub's
SotW pump without sockets."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from services.xds import sotw
from services.xds.hub import Hub, SotwConnection
from services.xds.peers import Peer
from services.xds.protocol import Resource, Table
from services.xds.sotw import Request, TypeState
from services.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE

pytestmark = pytest.mark.unit


def table(version: int = 1, **resources: str) -> Table:
    t = Table(version=version)
    for name, content in resources.items():
        t.resources[name] = Resource(name, content, any_pb2.Any(type_url="x", value=content.encode()))
    return t


def everything(_name: str) -> bool:
    return True


def names(response: sotw.Response | None) -> list[str]:
    assert response is not None
    return [r.name for r in response.resources]


def sent(state: TypeState, t: Table, nonce: str) -> sotw.Response:
    """Compute, require, and record a response."""
    response = state.compute(t, everything)
    assert response is not None
    state.sent(response, nonce, t.version)
    return response


def acked(state: TypeState, nonce: str, version: str = "") -> str:
    return state.on_request(Request(names=tuple(sorted(state.names)), version=version, nonce=nonce))


# --- rule 1 ---------------------------------------------------------------------------------------


def test_rule_1_the_first_request_is_answered_whatever_version_it_claims():
    t = table(l1="a")
    first_stream = TypeState(LISTENER)
    first_stream.on_request(Request(names=("l1",)))
    response = sent(first_stream, t, "n1")
    # A reconnect: a new stream, the client's version is current, its nonce empty.
    again = TypeState(LISTENER)
    assert again.on_request(Request(names=("l1",), version=response.version)) == "subscribe"
    assert again.ready() and names(again.compute(t, everything)) == ["l1"]


def test_rule_1_a_nonce_on_a_first_request_is_not_stale():
    state = TypeState(ROUTE)
    assert state.on_request(Request(names=("r",), nonce="old-stream-7")) == "subscribe" and state.ready()


def test_versions_name_content_so_a_restarted_server_never_reuses_one_for_other_content():
    one, two = TypeState(CLUSTER), TypeState(CLUSTER)
    for state in (one, two):
        state.on_request(Request(names=("c",)))
    assert one.compute(table(c="v1"), everything).version == two.compute(table(version=9, c="v1"), everything).version
    assert one.compute(table(c="v1"), everything).version != two.compute(table(c="v2"), everything).version


# --- rule 2 ---------------------------------------------------------------------------------------


def test_rule_2_a_stale_nonce_is_ignored_entirely():
    state = TypeState(CLUSTER)
    state.on_request(Request(names=("a",)))
    sent(state, table(a="1"), "n1")
    assert acked(state, "n1") == "ack"
    state.dirty = True
    sent(state, table(2, a="2"), "n2")
    # A request built before n2 arrived: older nonce, new names. Ignored, names included.
    assert state.on_request(Request(names=("a", "b"), nonce="n1")) == "stale"
    assert state.names == {"a"} and state.awaiting
    assert state.on_request(Request(names=("a", "b"), nonce="n2")) == "ack"  # the next ACK carries them
    assert state.names == {"a", "b"} and state.ready()


# --- rule 3 ---------------------------------------------------------------------------------------


def test_rule_3_nothing_is_resent_after_a_nack_until_something_changes():
    state = TypeState(LISTENER)
    state.on_request(Request(names=("l",)))
    good = sent(state, table(l="good"), "n1")
    acked(state, "n1", good.version)
    state.dirty = True
    sent(state, table(2, l="bad"), "n2")
    nack = Request(names=("l",), version=good.version, nonce="n2", error="invalid listener")
    assert state.on_request(nack) == "nack"
    assert state.last_nack == "invalid listener" and state.known == {"l": "good"}  # the client kept its state
    state.dirty = True  # another push of the same content
    assert state.compute(table(3, l="bad"), everything) is None
    assert state.compute(table(4, l="fixed"), everything) is not None  # a change is sent


# --- rule 4 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("type_url", [LISTENER, CLUSTER])
def test_rule_4_a_first_lds_or_cds_request_naming_nothing_is_a_wildcard(type_url: str):
    state = TypeState(type_url)
    state.on_request(Request())
    assert state.wildcard and names(state.compute(table(a="1", b="1"), everything)) == ["a", "b"]
    sent(state, table(a="1", b="1"), "n1")
    assert acked(state, "n1") == "ack" and state.wildcard  # its empty ACKs keep it


@pytest.mark.parametrize("type_url", [ROUTE, ENDPOINT])
def test_rule_4_a_first_rds_or_eds_request_naming_nothing_subscribes_nothing_but_is_answered(type_url: str):
    state = TypeState(type_url)
    state.on_request(Request())
    assert not state.wildcard and names(state.compute(table(a="1"), everything)) == []


def test_rule_4_an_empty_list_after_named_ones_unsubscribes_everything():
    state = TypeState(CLUSTER)
    state.on_request(Request(names=("a",)))
    sent(state, table(a="1"), "n1")
    assert state.on_request(Request(names=(), nonce="n1")) == "ack"
    assert not state.wildcard and state.names == frozenset() and state.ready()
    assert names(state.compute(table(a="1"), everything)) == []


def test_rule_4_an_explicit_star_is_a_wildcard():
    state = TypeState(ENDPOINT)
    state.on_request(Request(names=("*",)))
    assert names(state.compute(table(a="1", b="1"), everything)) == ["a", "b"]


# --- rule 5 ---------------------------------------------------------------------------------------


def test_rule_5_responses_carry_every_subscribed_resource_that_exists():
    state = TypeState(LISTENER)
    state.on_request(Request(names=("a", "b", "absent")))
    sent(state, table(a="1", b="1"), "n1")
    acked(state, "n1")
    state.dirty = True
    response = state.compute(table(2, a="2", b="1", c="1"), everything, changed={"a"})
    assert names(response) == ["a", "b"]  # b unchanged but carried; c not subscribed
    assert names(state.compute(table(a="1", b="1"), lambda n: n != "b")) == ["a"]  # visibility filters


# --- rule 6 ---------------------------------------------------------------------------------------


def test_rule_6_a_change_of_names_is_answered():
    state = TypeState(CLUSTER)
    state.on_request(Request(names=("a",)))
    sent(state, table(a="1"), "n1")
    assert state.on_request(Request(names=("a", "b"), nonce="n1")) == "ack"
    assert state.must_answer and names(state.compute(table(a="1", b="1"), everything)) == ["a", "b"]


def test_rule_6_a_push_is_sent_only_when_the_streams_view_changed():
    state = TypeState(CLUSTER)
    state.on_request(Request(names=("a",)))
    sent(state, table(a="1"), "n1")
    acked(state, "n1")
    state.dirty = True
    assert state.compute(table(2, a="1", z="1"), everything, changed={"z"}) is None  # someone else's change
    assert state.compute(table(2, a="1", z="1"), everything) is None  # same view, even recomputed fully
    state.settle(2)
    assert (state.sent_version, state.acked_version, state.dirty) == (2, 2, False)  # proxy-status: SYNCED
    state.dirty = True
    assert names(state.compute(table(3, a="2"), everything, changed={"a"})) == ["a"]


def test_one_response_per_type_is_unacknowledged_at_a_time():
    state = TypeState(ROUTE)
    state.on_request(Request(names=("r",)))
    sent(state, table(r="1"), "n1")
    state.dirty = True
    assert not state.ready()
    acked(state, "n1")
    assert state.ready()


# --- rule 7 ---------------------------------------------------------------------------------------


def test_rule_7_types_are_independent_and_may_come_in_any_order():
    states = {t: TypeState(t) for t in (ENDPOINT, CLUSTER, ROUTE, LISTENER)}  # EDS first, as after a reconnect
    for type_url, state in states.items():
        state.on_request(Request(names=(f"{type_url[-5:]}",)))
        assert state.ready()
    sent(states[ENDPOINT], table(), "e1")
    assert states[ENDPOINT].awaiting and not any(s.awaiting for t, s in states.items() if t != ENDPOINT)


def test_wire_conversion():
    message = sotw.to_message(LISTENER, "n1", sotw.Response("v1", (table(a="1").resources["a"],)))
    assert (message.version_info, message.nonce, message.type_url, len(message.resources)) == ("v1", "n1", LISTENER, 1)
    request = sotw.from_message(
        discovery_pb2.DiscoveryRequest(
            resource_names=["a"], version_info="v1", response_nonce="n1", error_detail={"code": 3}
        )
    )
    assert request == Request(("a",), "v1", "n1", "code 3")


# --- the hub's pump ---------------------------------------------------------------------------------


async def _next(conn: SotwConnection, timeout: float = 1.0):
    return await asyncio.wait_for(conn.out.get(), timeout)


async def test_the_hub_pumps_sotw_responses_on_request_and_on_change():
    hub = Hub()
    hub.publish(LISTENER, table(1, l1="a", l2="a"), None)
    conn = hub.new_connection(Peer("workload", identity="spiffe://cluster.local/ns/default/sa/c"), sotw_stream=True)
    assert isinstance(conn, SotwConnection) and conn.protocol == "sotw"
    pump = asyncio.create_task(hub.pump_sotw(conn))
    try:
        hub.on_sotw_request(conn, LISTENER, Request(names=("l1",)))
        first = await _next(conn)
        assert first.type_url == LISTENER and len(first.resources) == 1
        hub.on_sotw_request(conn, LISTENER, Request(names=("l1",), version=first.version_info, nonce=first.nonce))
        hub.publish(LISTENER, table(2, l1="a", l2="b"), {"l2"})  # not this stream's
        await asyncio.sleep(0.05)
        assert conn.out.empty()
        hub.publish(LISTENER, table(3, l1="b", l2="b"), {"l1"})
        pushed = await _next(conn)
        assert pushed.version_info != first.version_info and pushed.nonce != first.nonce
        nacks: list[str] = []
        hub.on_nack = lambda _c, _t, error: nacks.append(error)
        hub.on_sotw_request(conn, LISTENER, Request(("l1",), first.version_info, pushed.nonce, "bad listener"))
        assert nacks == ["bad listener"] and conn.subs[LISTENER].last_nack == "bad listener"
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
