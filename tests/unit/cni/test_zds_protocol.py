"""ZDS state machines pumped into each other, and the protocol errors of both sides (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataplane.cni.nodeagent import zds_protocol as zp
from mesh.proto_gen.istio.workload import zds_pb2 as pb

pytestmark = pytest.mark.unit
INFO = zp.WorkloadInfo(name="a", namespace="ns", service_account="sa")


def pump(server: zp.ServerConnection, client: zp.ClientConnection, errors: dict[str, str] | None = None) -> list:
    """Deliver every datagram both ways until quiet; returns what ztunnel received, in order."""
    received = []
    while (out := server.next_outgoing()) is not None:
        request = client.receive(out.data, 1 if out.fd_uid else 0)
        received.append(request)
        error = (errors or {}).get(getattr(request, "uid", ""), "")
        server.receive(client.ack(error))
    return received


def connected(snapshot: list) -> tuple[zp.ServerConnection, zp.ClientConnection]:
    server, client = zp.ServerConnection(lambda: snapshot), zp.ClientConnection()
    assert server.next_outgoing() is None  # nothing goes out before the hello
    assert server.receive(client.hello()) == []
    assert server.state is zp.ServerState.SNAPSHOT
    return server, client


def test_snapshot_then_updates_in_lock_step() -> None:
    server, client = connected([zp.Add("u1", INFO), zp.Keep("u2")])
    first = server.next_outgoing()
    assert first is not None and first.fd_uid == "u1"
    assert server.next_outgoing() is None, "one request in flight at a time"
    events = server.receive(client.ack()) if client.receive(first.data, 1) else []
    assert events == [zp.Acked(zp.Add("u1", INFO), "")]
    rest = pump(server, client)
    assert rest == [zp.Keep("u2"), zp.SnapshotSent()]
    assert server.state is zp.ServerState.READY and client.snapshot_done
    server.queue(zp.Add("u3", INFO))
    server.queue(zp.Del("u1"))
    assert pump(server, client) == [zp.Add("u3", INFO), zp.Del("u1")]


def test_updates_queued_during_the_snapshot_follow_it() -> None:
    server, client = connected([zp.Add("u1", INFO)])
    server.queue(zp.Del("u1"))
    assert pump(server, client) == [zp.Add("u1", INFO), zp.SnapshotSent(), zp.Del("u1")]


def test_snapshot_done_event_and_ack_errors_are_reported() -> None:
    server, client = connected([zp.Add("u1", INFO)])
    out = server.next_outgoing()
    client.receive(out.data, 1)
    assert server.receive(client.ack("no such workload")) == [zp.Acked(zp.Add("u1", INFO), "no such workload")]
    out = server.next_outgoing()
    client.receive(out.data, 0)
    assert server.receive(client.ack()) == [zp.Acked(zp.SnapshotSent(), ""), zp.SnapshotDone()]


def test_empty_snapshot_is_just_snapshot_sent() -> None:
    server, client = connected([])
    assert pump(server, client) == [zp.SnapshotSent()]


def test_server_refuses_bad_peers() -> None:
    server = zp.ServerConnection(list)
    with pytest.raises(zp.ProtocolError, match="version"):
        server.receive(zp.encode_hello(pb.NOT_USED))
    server = zp.ServerConnection(list)
    with pytest.raises(zp.ProtocolError, match="file descriptor"):
        server.receive(zp.encode_hello(), nfds=1)
    server, client = connected([])
    with pytest.raises(zp.ProtocolError, match="no request in flight"):
        server.receive(client.ack())
    with pytest.raises(ValueError):
        server.queue(zp.Keep("u1"))  # Keep only ever belongs to a snapshot


def test_close_returns_what_was_never_acknowledged() -> None:
    server, _client = connected([zp.Add("u1", INFO)])
    server.next_outgoing()
    server.queue(zp.Del("u9"))
    assert server.close() == [zp.Add("u1", INFO), zp.SnapshotSent(), zp.Del("u9")]
    assert server.next_outgoing() is None


@pytest.mark.parametrize(
    ("request_", "nfds", "message"),
    [
        (zp.Add("u1", INFO), 0, "carried 0 fds"),
        (zp.Add("u1", INFO), 2, "carried 2 fds"),
        (zp.Del("u1"), 1, "carried a file descriptor"),
        (zp.SnapshotSent(), 1, "carried a file descriptor"),
    ],
)
def test_client_fd_rules(request_: zp.Request, nfds: int, message: str) -> None:
    with pytest.raises(zp.ProtocolError, match=message):
        zp.ClientConnection().receive(zp.encode_request(request_), nfds)


def test_client_refuses_keep_after_snapshot_and_second_snapshot() -> None:
    client = zp.ClientConnection()
    client.receive(zp.encode_request(zp.SnapshotSent()), 0)
    with pytest.raises(zp.ProtocolError, match="after the snapshot"):
        client.receive(zp.encode_request(zp.Keep("u1")), 0)
    with pytest.raises(zp.ProtocolError, match="second SnapshotSent"):
        client.receive(zp.encode_request(zp.SnapshotSent()), 0)


def test_add_without_workload_info_is_an_error() -> None:
    data = pb.WorkloadRequest(add=pb.AddWorkload(uid="u1")).SerializeToString()
    with pytest.raises(zp.ProtocolError, match="without workload_info"):
        zp.decode_request(data)


def test_wire_format_matches_istio_field_numbers() -> None:
    """Bytes as Istio's schema encodes them: WorkloadRequest.add=1{uid=1, workload_info=2}, del=2{uid=2}."""
    add = zp.encode_request(zp.Add("u", zp.WorkloadInfo(name="n", namespace="s", service_account="a")))
    assert add == b"\x0a\x0e\x0a\x01u\x12\x09\x0a\x01n\x12\x01s\x1a\x01a"
    assert zp.encode_request(zp.Del("u")) == b"\x12\x03\x12\x01u"
    assert zp.encode_request(zp.SnapshotSent()) == b"\x1a\x00"
    assert zp.encode_request(zp.Keep("u")) == b"\x2a\x03\x0a\x01u"
    assert zp.encode_hello() == b"\x08\x01"
    assert zp.encode_ack(zp.Ack("")) == b"\x0a\x00"


uids = st.text(alphabet="abcdef0123456789-", min_size=1, max_size=36)


@given(st.lists(st.tuples(st.sampled_from(["add", "del"]), uids), max_size=20), st.lists(uids, max_size=5))
def test_any_sequence_arrives_in_order_after_the_snapshot(ops: list[tuple[str, str]], snapshot_uids: list[str]) -> None:
    server, client = connected([zp.Add(u, INFO) for u in snapshot_uids])
    expected: list = [zp.Add(u, INFO) for u in snapshot_uids] + [zp.SnapshotSent()]
    for kind, uid in ops:
        request = zp.Add(uid, INFO) if kind == "add" else zp.Del(uid)
        server.queue(request)
        expected.append(request)
    assert pump(server, client) == expected
    assert zp.decode_ack(client.ack("x")) == zp.Ack("x")
