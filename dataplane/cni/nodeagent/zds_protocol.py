"""ZDS, the node agent ↔ ztunnel protocol, as sans-IO state machines (istio.workload.zds).

Wire facts (reference §4; istio/istio cni/pkg/nodeagent/ztunnelserver.go, istio/ztunnel
src/inpod/protocol.rs): one bare protobuf per SOCK_SEQPACKET datagram; ztunnel connects and sends
`ZdsHello{V1}`; the agent sends each pod of its snapshot as `AddWorkload` (carrying the netns fd
in SCM_RIGHTS) or `KeepWorkload`, then `SnapshotSent`, each answered by an `Ack` before the next
is sent; afterwards only Add and Del. Protobuf is converted to the frozen types below at this
edge; nothing else sees a generated class.

`ServerConnection` is the agent's side of one connection, `ClientConnection` ztunnel's; neither
touches a socket. Feed received datagrams (and how many fds came with them) to `receive`, and
send what `next_outgoing` / the returned acks say.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from mesh.proto_gen.istio.workload import zds_pb2 as pb

VERSION_V1 = pb.V1
READ_SIZE = 1024  # ztunnel and the agent read datagrams of at most this many bytes


class ProtocolError(Exception):
    """The peer broke the protocol; the connection must be closed."""


@dataclass(frozen=True, kw_only=True)
class WorkloadInfo:
    """Who the pod is (ztunnel finds its workload by namespace and service account, then name)."""

    name: str
    namespace: str
    service_account: str


@dataclass(frozen=True)
class Add:
    """Take over a pod; its netns fd travels with the message."""

    uid: str
    info: WorkloadInfo


@dataclass(frozen=True)
class Keep:
    """Snapshot only: the pod is still enrolled, but the agent holds no netns for it."""

    uid: str


@dataclass(frozen=True)
class Del:
    """Stop proxying a pod."""

    uid: str


@dataclass(frozen=True)
class SnapshotSent:
    """Every pod of the snapshot has been sent."""


Request = Add | Keep | Del | SnapshotSent


@dataclass(frozen=True)
class Ack:
    """ztunnel's answer to one request; an empty error means success."""

    error: str = ""


# --- encoding (the only place protobuf appears) -------------------------------------------------


def encode_hello(version: int = VERSION_V1) -> bytes:
    return pb.ZdsHello(version=version).SerializeToString()


def decode_hello(data: bytes) -> int:
    try:
        return pb.ZdsHello.FromString(data).version
    except DecodeError as e:
        raise ProtocolError(f"bad ZdsHello: {e}") from None


def encode_request(request: Request) -> bytes:
    if isinstance(request, Add):
        info = pb.WorkloadInfo(
            name=request.info.name, namespace=request.info.namespace, service_account=request.info.service_account
        )
        msg = pb.WorkloadRequest(add=pb.AddWorkload(uid=request.uid, workload_info=info))
    elif isinstance(request, Keep):
        msg = pb.WorkloadRequest(keep=pb.KeepWorkload(uid=request.uid))
    elif isinstance(request, Del):
        msg = pb.WorkloadRequest(**{"del": pb.DelWorkload(uid=request.uid)})
    else:
        msg = pb.WorkloadRequest(snapshot_sent=pb.SnapshotSent())
    return msg.SerializeToString()


def decode_request(data: bytes) -> Request:
    """A WorkloadRequest; `Add` without workload_info is a protocol error (as in ztunnel)."""
    try:
        msg = pb.WorkloadRequest.FromString(data)
    except DecodeError as e:
        raise ProtocolError(f"bad WorkloadRequest: {e}") from None
    kind = msg.WhichOneof("payload")
    if kind == "add":
        if not msg.add.HasField("workload_info"):
            raise ProtocolError(f"AddWorkload {msg.add.uid} without workload_info")
        w = msg.add.workload_info
        return Add(msg.add.uid, WorkloadInfo(name=w.name, namespace=w.namespace, service_account=w.service_account))
    if kind == "keep":
        return Keep(msg.keep.uid)
    if kind == "del":
        return Del(getattr(msg, "del").uid)
    if kind == "snapshot_sent":
        return SnapshotSent()
    raise ProtocolError("WorkloadRequest without a payload")


def encode_ack(ack: Ack) -> bytes:
    return pb.WorkloadResponse(ack=pb.Ack(error=ack.error)).SerializeToString()


def decode_ack(data: bytes) -> Ack:
    try:
        msg = pb.WorkloadResponse.FromString(data)
    except DecodeError as e:
        raise ProtocolError(f"bad WorkloadResponse: {e}") from None
    if msg.WhichOneof("payload") != "ack":
        raise ProtocolError("WorkloadResponse without an ack")
    return Ack(msg.ack.error)


# --- the agent's side ---------------------------------------------------------------------------


class ServerState(enum.Enum):
    AWAIT_HELLO = "await-hello"
    SNAPSHOT = "snapshot"  # sending the snapshot (SnapshotSent not yet acknowledged)
    READY = "ready"
    CLOSED = "closed"


@dataclass(frozen=True)
class Outgoing:
    """A datagram to send; `fd_uid` names the pod whose netns fd must ride along (Add only)."""

    request: Request
    data: bytes
    fd_uid: str | None


@dataclass(frozen=True)
class Acked:
    """ztunnel answered `request`."""

    request: Request
    error: str


@dataclass(frozen=True)
class SnapshotDone:
    """ztunnel acknowledged SnapshotSent: it now serves exactly the snapshot's pods."""


class ServerConnection:
    """One ztunnel connection as the agent sees it: hello, snapshot, then Add/Del, in lock-step.

    `snapshot` is a callable read when the hello arrives, so the snapshot is the agent's state at
    that moment; later changes must be `queue`d. At most one request is in flight.
    """

    def __init__(self, snapshot: Callable[[], Iterable[Add | Keep]]):
        self.state = ServerState.AWAIT_HELLO
        self._snapshot = snapshot
        self._pending: deque[Request] = deque()
        self.in_flight: Request | None = None

    def receive(self, data: bytes, nfds: int = 0) -> list[Acked | SnapshotDone]:
        """Take one datagram from ztunnel; returns what it meant (raises ProtocolError)."""
        if nfds:
            raise ProtocolError("ztunnel sent a file descriptor")
        if self.state is ServerState.CLOSED:
            raise ProtocolError("connection closed")
        if self.state is ServerState.AWAIT_HELLO:
            version = decode_hello(data)
            if version != VERSION_V1:
                raise ProtocolError(f"unsupported ZDS version {version}")
            self.state = ServerState.SNAPSHOT
            items = list(self._snapshot())
            if any(not isinstance(r, (Add, Keep)) for r in items):
                raise ValueError("a snapshot holds only Add and Keep")
            self._pending.extendleft(reversed([*items, SnapshotSent()]))
            return []
        ack = decode_ack(data)
        if self.in_flight is None:
            raise ProtocolError("Ack with no request in flight")
        request, self.in_flight = self.in_flight, None
        events: list[Acked | SnapshotDone] = [Acked(request, ack.error)]
        if isinstance(request, SnapshotSent):
            self.state = ServerState.READY
            events.append(SnapshotDone())
        return events

    def queue(self, request: Add | Del) -> None:
        """Send `request` after everything already queued (the snapshot comes first)."""
        if not isinstance(request, (Add, Del)):
            raise ValueError("after the snapshot only Add and Del are sent")
        if self.state is ServerState.CLOSED:
            raise ProtocolError("connection closed")
        self._pending.append(request)

    def next_outgoing(self) -> Outgoing | None:
        """The next datagram, once the hello came and nothing is awaiting its Ack."""
        if self.in_flight is not None or self.state in (ServerState.AWAIT_HELLO, ServerState.CLOSED):
            return None
        if not self._pending:
            return None
        request = self._pending.popleft()
        self.in_flight = request
        return Outgoing(request, encode_request(request), request.uid if isinstance(request, Add) else None)

    def abandon(self) -> Request | None:
        """Drop the request in flight without sending it (its pod left while it was queued)."""
        request, self.in_flight = self.in_flight, None
        return request

    def close(self) -> list[Request]:
        """Mark closed; returns the requests that will never be acknowledged."""
        self.state = ServerState.CLOSED
        lost = ([self.in_flight] if self.in_flight else []) + list(self._pending)
        self.in_flight = None
        self._pending.clear()
        return lost


# --- ztunnel's side (tests' fake ztunnel; the real ztunnel's client later) ----------------------


class ClientConnection:
    """ztunnel's view: say hello, then answer every request with an Ack.

    Protocol errors as ztunnel defines them (istio/ztunnel src/inpod/protocol.rs): an Add without
    exactly one fd, any other request with an fd, Keep after the snapshot, a second SnapshotSent.
    """

    def __init__(self) -> None:
        self.snapshot_done = False

    def hello(self) -> bytes:
        return encode_hello(VERSION_V1)

    def receive(self, data: bytes, nfds: int) -> Request:
        """Decode and check one request (raises ProtocolError); ack it with `ack()`."""
        request = decode_request(data)
        if isinstance(request, Add) and nfds != 1:
            raise ProtocolError(f"AddWorkload {request.uid} carried {nfds} fds, expected 1")
        if not isinstance(request, Add) and nfds:
            raise ProtocolError(f"{type(request).__name__} carried a file descriptor")
        if isinstance(request, Keep) and self.snapshot_done:
            raise ProtocolError(f"KeepWorkload {request.uid} after the snapshot")
        if isinstance(request, SnapshotSent):
            if self.snapshot_done:
                raise ProtocolError("a second SnapshotSent")
            self.snapshot_done = True
        return request

    @staticmethod
    def ack(error: str = "") -> bytes:
        return encode_ack(Ack(error))
