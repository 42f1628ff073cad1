"""`meshctl x authz check`: the real translators and RBAC engines over stored objects."""

from __future__ import annotations

import json

import pytest

from cli import authz_check as ac
from tests.unit.cli.diagnostics_objects import bookinfo, policy

GET_ONLY = {
    "targetRefs": [{"kind": "Service", "group": "", "name": "reviews"}],
    "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}],
}


def answer(store, dst="reviews:9080", method="GET", path="/", src="client"):
    return ac.check(store, ac.find_source(store, src, "default"), ac.find_target(store, dst, "default"), method, path)


def decisions(a: ac.Answer) -> list[tuple[str, str, str]]:
    return [(r.layer.split()[0], r.decision, r.policy) for r in a.rows]


def test_waypoint_get_only_policy_allows_get_and_denies_delete() -> None:
    store = bookinfo(policy("allow-get", GET_ONLY))
    get = answer(store)
    assert decisions(get) == [("L7", "ALLOW", "default/allow-get (ALLOW)"), ("L4", "ALLOW", "-")]
    assert get.allowed
    delete = answer(store, method="DELETE")
    assert decisions(delete)[0] == ("L7", "DENY", "default/allow-get (ALLOW)")
    assert "DELETE / matched no rule" in delete.rows[0].reason
    assert not delete.allowed
    # The destination ztunnel sees the waypoint, and the output says so.
    assert any("spiffe://cluster.local/ns/default/sa/waypoint" in note for note in delete.notes)


def test_l7_deny_policy_is_named() -> None:
    deny = {**GET_ONLY, "action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}
    store = bookinfo(policy("no-admin", deny))
    assert decisions(answer(store, path="/admin/x"))[0] == ("L7", "DENY", "default/no-admin (DENY)")
    assert decisions(answer(store, path="/ok"))[0][1] == "ALLOW"


def test_allow_nothing_denies_at_l4() -> None:
    store = bookinfo(policy("allow-nothing", {}), with_waypoint=False)
    a = answer(store)
    assert decisions(a) == [("L4", "DENY", "-")]
    assert a.rows[0].reason == "denied: no ALLOW policy matched (default/allow-nothing)"
    assert "default/reviews-0:9080" in a.rows[0].layer


def test_l4_policy_sees_the_waypoint_identity_behind_a_waypoint() -> None:
    from_sleep = {"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}]}]}
    direct = answer(bookinfo(policy("only-sleep", from_sleep), with_waypoint=False))
    assert decisions(direct) == [("L4", "ALLOW", "default/only-sleep (ALLOW)")]
    behind = answer(bookinfo(policy("only-sleep", from_sleep)))
    assert decisions(behind)[-1] == ("L4", "DENY", "-")


def test_destination_by_pod_and_by_ip() -> None:
    store = bookinfo(policy("allow-nothing", {}), with_waypoint=False)
    assert decisions(answer(store, dst="reviews-0:9080")) == [("L4", "DENY", "-")]
    assert decisions(answer(store, dst="198.18.100.5:9080")) == [("L4", "DENY", "-")]
    assert decisions(answer(store, dst="198.18.1.20:9080")) == [("L4", "DENY", "-")]


def test_unknown_objects_and_missing_port_are_one_line_errors() -> None:
    store = bookinfo()
    with pytest.raises(ac.AuthzCheckError, match='source pod "default/nobody" not found'):
        ac.find_source(store, "nobody", "default")
    with pytest.raises(ac.AuthzCheckError, match="needs a port"):
        ac.find_target(store, "reviews", "default")
    with pytest.raises(ac.AuthzCheckError, match='no Service or pod "other/reviews"'):
        ac.find_target(store, "other/reviews:9080", "default")
    assert answer(store, dst="reviews:1").rows[-1].reason == "the Service has no port 1 (ports: 9080)"


def test_render_table_and_json() -> None:
    a = answer(bookinfo(policy("allow-get", GET_ONLY)), method="DELETE")
    text = ac.render(a)
    assert text.splitlines()[0] == "default/client -> default/reviews:9080"
    assert text.splitlines()[1].split() == ["LAYER", "DECISION", "POLICY", "REASON"]
    assert "Note: traffic goes through waypoint default/waypoint" in text
    doc = json.loads(ac.render(a, "json"))
    assert doc["allowed"] is False and doc["rows"][0]["decision"] == "DENY"
