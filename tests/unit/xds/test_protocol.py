"""The delta xDS state machine, pumped without sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.xds.protocol import Request, Resource, Subscription, Table, is_empty

pytestmark = pytest.mark.unit


def table(**versions: str) -> Table:
    t = Table(version=1)
    for name, version in versions.items():
        t.resources[name] = Resource(name, version, b"x", (f"/10.0.0.{len(t.resources) + 1}",))
        t.keys[f"/10.0.0.{len(t.resources)}"] = name
    return t


def everything(_name: str) -> bool:
    return True


def names(response) -> list[str]:
    return [r.name for r in response.resources]


def test_first_wildcard_request_gets_everything_and_must_be_answered() -> None:
    sub = Subscription()
    assert sub.on_request(Request(), first=True) == "subscribe"
    assert sub.wildcard and sub.ready() and sub.must_answer
    response = sub.compute(table(a="1", b="1"), everything)
    assert names(response) == ["a", "b"] and response.removed == ()
    sub.sent(response, "n1", 1)
    assert sub.awaiting and not sub.ready()
    assert sub.on_request(Request(nonce="n1"), first=False) == "ack"
    assert sub.acked_version == 1 and not sub.awaiting


def test_initial_resource_versions_are_not_resent_after_a_reconnect() -> None:
    sub = Subscription()
    sub.on_request(Request(initial_versions={"a": "1", "b": "old", "gone": "1"}), first=True)
    response = sub.compute(table(a="1", b="2"), everything)
    assert names(response) == ["b"]  # a unchanged, b changed
    assert response.removed == ("gone",)


def test_push_sends_only_changes_and_removals() -> None:
    sub = Subscription()
    sub.on_request(Request(), first=True)
    sub.sent(sub.compute(table(a="1", b="1"), everything), "n1", 1)
    sub.on_request(Request(nonce="n1"), first=False)
    now = table(a="2", c="1")  # a changed, b removed, c added
    sub.dirty = True
    response = sub.compute(now, everything, changed={"a", "b", "c"})
    assert names(response) == ["a", "c"] and response.removed == ("b",)


def test_nack_keeps_the_clients_last_good_state() -> None:
    sub = Subscription()
    sub.on_request(Request(), first=True)
    sub.sent(sub.compute(table(a="1"), everything), "n1", 1)
    sub.on_request(Request(nonce="n1"), first=False)
    bad = table(a="2")
    sub.sent(sub.compute(bad, everything), "n2", 2)
    assert sub.on_request(Request(nonce="n2", error="a: invalid"), first=False) == "nack"
    assert sub.known == {"a": "1"} and sub.last_nack == "a: invalid" and sub.acked_version == 1
    fixed = table(a="3")
    assert names(sub.compute(fixed, everything, changed={"a"})) == ["a"]


def test_a_stale_nonce_is_ignored() -> None:
    sub = Subscription()
    sub.on_request(Request(), first=True)
    sub.sent(sub.compute(table(a="1"), everything), "n1", 1)
    sub.on_request(Request(nonce="n1"), first=False)
    sub.sent(sub.compute(table(a="2"), everything, changed={"a"}), "n2", 2)
    assert sub.on_request(Request(nonce="n1", error="late"), first=False) == "stale"
    assert sub.awaiting and sub.known == {"a": "2"} and sub.last_nack is None


def test_on_demand_names_and_aliases() -> None:
    sub = Subscription()
    sub.on_request(Request(subscribe=("*",), unsubscribe=("*",)), first=True)  # ztunnel's on-demand start
    assert not sub.wildcard
    t = table(w1="1", w2="1")
    response = sub.compute(t, everything)
    assert is_empty(response)
    sub.settle()
    sub.on_request(Request(subscribe=("/10.0.0.2", "/10.9.9.9")), first=False)
    response = sub.compute(t, everything)
    assert names(response) == ["w2"] and response.aliases == {"w2": ("/10.0.0.2",)}
    assert response.removed == ("/10.9.9.9",)  # asked for, does not exist
    sub.sent(response, "n1", 1)
    sub.on_request(Request(nonce="n1"), first=False)
    assert is_empty(sub.compute(t, everything))  # nothing new: not answered twice


def test_invisible_resources_are_withheld_and_removed_when_they_become_invisible() -> None:
    sub = Subscription()
    sub.on_request(Request(), first=True)
    t = table(mine="1", other="1")
    response = sub.compute(t, lambda n: n == "mine")
    assert names(response) == ["mine"]
    sub.sent(response, "n1", 1)
    sub.on_request(Request(nonce="n1"), first=False)
    assert sub.compute(t, lambda n: False, changed={"mine"}).removed == ("mine",)


ops = st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from([None, "1", "2", "3"])), max_size=20)


@given(ops, st.lists(st.booleans(), max_size=20))
def test_after_acked_pushes_the_client_holds_exactly_the_table(steps, nacks) -> None:
    """Model check: apply random table changes, push, ACK or NACK; after a final clean push the
    client's view equals the server's table."""
    sub = Subscription()
    sub.on_request(Request(), first=True)
    current: dict[str, str] = {}
    client: dict[str, str] = {}
    nonce = 0
    for i, (name, version) in enumerate(steps):
        if version is None:
            current.pop(name, None)
        else:
            current[name] = version
        t = table(**current)
        sub.dirty = True
        response = sub.compute(t, everything, changed={name})
        if is_empty(response) and not sub.must_answer:
            sub.settle()
            continue
        nonce += 1
        sub.sent(response, f"n{nonce}", nonce)
        if i < len(nacks) and nacks[i]:
            sub.on_request(Request(nonce=f"n{nonce}", error="no"), first=False)
        else:
            for r in response.resources:
                client[r.name] = r.version
            for removed in response.removed:
                client.pop(removed, None)
            sub.on_request(Request(nonce=f"n{nonce}"), first=False)
    final = sub.compute(table(**current), everything)
    for r in final.resources:
        client[r.name] = r.version
    for removed in final.removed:
        client.pop(removed, None)
    assert client == current
