"""State-of-the-world xDS, per stream and type, as pure state transitions (no gRPC, no asyncio).

This is what a stock gRPC client speaks (it never calls DeltaAggregatedResources). The rules,
numbered as in ../shared/reference/grpc-proxyless-xds.md "Rules for a state-of-the-world server"
(and Envoy's xDS protocol, "ACK/NACK and resource type instance version"):

1. The first request of a type on a stream is always answered, whatever its `version_info`
   (after a reconnect the client sends the version it holds with an empty nonce).
2. A request whose non-empty `response_nonce` is not the latest nonce sent for its type is stale
   and ignored entirely; the client repeats its current names with the next ACK.
3. A request carrying `error_detail` is a NACK: the client keeps its last good state, and nothing
   more is sent for the type until what the client would get changes (the configuration, or the
   names it subscribes to).
4. Only a first LDS or CDS request naming nothing is a (legacy) wildcard, which lasts until the
   client names resources. Once it has named some, an empty list unsubscribes from everything.
   `*` among the names is an explicit wildcard.
5. Every response carries every subscribed resource that exists (for LDS and CDS a missing one
   means deleted; for RDS and EDS it is simply the simplest correct answer).
6. A change of subscribed names is answered; a configuration change is pushed when it changes
   what the stream's response would carry (its version is a digest of the names and content
   versions it holds, so an unchanged view is not resent).
7. Types are independent: requests may come in any order, each type keeps its own state.

At most one response per type is unacknowledged; changes meanwhile merge into the next one.
Response versions are digests of what they carry and resource versions digests of content, so a
version never names different content, across restarts too (rule 1's concern with reused versions).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from .protocol import Resource, Table
from .types import CLUSTER, LISTENER

WILDCARD = "*"
LEGACY_WILDCARD_TYPES = (LISTENER, CLUSTER)  # rule 4: only these may subscribe by naming nothing


@dataclass(frozen=True)
class Request:
    """What the state machine needs from a DiscoveryRequest."""

    names: tuple[str, ...] = ()
    version: str = ""  # version_info: the last version the client accepted
    nonce: str = ""
    error: str | None = None  # error_detail.message of a NACK


@dataclass(frozen=True)
class Response:
    """A full response: its version and every subscribed resource that exists, by name."""

    version: str
    resources: tuple[Resource, ...]


def response_version(resources: Iterable[Resource]) -> str:
    """A digest of the names and content versions a response carries (rule 6)."""
    digest = hashlib.sha256()
    for r in resources:
        digest.update(f"{r.name}\0{r.version}\n".encode())
    return digest.hexdigest()[:16]


@dataclass
class TypeState:
    """One type on one stream. Attribute names shared with protocol.Subscription (`dirty`,
    `awaiting`, `known`, `sent_version`, `acked_version`, `last_nack`) are what the hub and
    proxy-status read."""

    type_url: str
    started: bool = False
    legacy_wildcard: bool = False
    wildcard: bool = False
    names: frozenset[str] = frozenset()
    nonce: str = ""  # the latest response sent
    version: str = ""  # its version
    client_version: str = ""  # the version the client says it holds
    awaiting: bool = False
    dirty: bool = False  # something may have changed for this stream since the last response
    must_answer: bool = False  # a request that needs an answer even when nothing changed
    known: dict[str, str] = field(default_factory=dict)  # name -> version of what the client holds
    inflight: dict[str, str] = field(default_factory=dict)
    sent_version: int = 0
    acked_version: int = 0
    last_nack: str | None = None

    # --- requests ---------------------------------------------------------------------------------

    def on_request(self, req: Request) -> str:
        """Fold a request in. Returns "stale", "nack", "ack" or "subscribe"."""
        first = not self.started
        if req.nonce and not first and req.nonce != self.nonce:
            return "stale"  # rule 2 (a nonce on a first request names another stream's response)
        outcome = self._acknowledge(req) if req.nonce and not first else "subscribe"
        self.client_version = req.version
        self.started = True
        if first:
            # Rule 4: a first LDS/CDS request naming nothing is a legacy wildcard.
            self.legacy_wildcard = not req.names and self.type_url in LEGACY_WILDCARD_TYPES
            self.dirty = self.must_answer = True  # rule 1
        if req.names:
            self.legacy_wildcard = False
        wildcard = self.legacy_wildcard or WILDCARD in req.names
        names = frozenset(n for n in req.names if n != WILDCARD)
        if (wildcard, names) != (self.wildcard, self.names):
            self.wildcard, self.names = wildcard, names  # rule 4: empty = nothing, after the first
            self.dirty = self.must_answer = True  # rule 6
        return outcome

    def _acknowledge(self, req: Request) -> str:
        self.awaiting = False
        inflight, self.inflight = self.inflight, {}
        if req.error is None:
            self.known = inflight
            self.acked_version = self.sent_version
            self.last_nack = None
            return "ack"
        self.last_nack = req.error  # rule 3: the client keeps `known`; wait for a change
        return "nack"

    # --- responses --------------------------------------------------------------------------------

    def ready(self) -> bool:
        """Whether a response may be due: something changed and none is unacknowledged."""
        return self.dirty and not self.awaiting

    def compute(self, table: Table, visible: Callable[[str], bool], changed: set[str] | None = None) -> Response | None:
        """The response due, or None when the stream would get what it was last sent.

        `changed` (the names a push changed; None: unknown) lets a push skip a stream none of
        whose subscribed names changed without looking at the table.
        """
        if not self.must_answer and changed is not None and not self.wildcard and self.names.isdisjoint(changed):
            return None
        names = table.resources.keys() if self.wildcard else self.names
        resources = tuple(
            table.resources[n] for n in sorted(names) if n in table.resources and visible(n)
        )  # rule 5: every subscribed resource that exists
        version = response_version(resources)
        if not self.must_answer and version == self.version:
            return None  # rules 3 and 6: nothing new for this stream
        return Response(version, resources)

    def sent(self, response: Response, nonce: str, table_version: int) -> None:
        """Record a response as sent."""
        self.nonce, self.version = nonce, response.version
        self.inflight = {r.name: r.version for r in response.resources}
        self.awaiting = True
        self.dirty = self.must_answer = False
        self.sent_version = table_version

    def settle(self, table_version: int) -> None:
        """Nothing to send after all: the stream already holds its view of `table_version`."""
        self.dirty = False
        if not self.awaiting and self.last_nack is None and self.sent_version:
            self.sent_version = self.acked_version = table_version


# --- wire -----------------------------------------------------------------------------------------


def from_message(request: discovery_pb2.DiscoveryRequest) -> Request:
    """The Request of a DiscoveryRequest."""
    error = request.error_detail.message if request.HasField("error_detail") else None
    if error is not None and not error:
        error = f"code {request.error_detail.code}"
    return Request(tuple(request.resource_names), request.version_info, request.response_nonce, error)


def to_message(type_url: str, nonce: str, response: Response) -> discovery_pb2.DiscoveryResponse:
    """The DiscoveryResponse carrying a Response (resources as their stored Any)."""
    return discovery_pb2.DiscoveryResponse(
        version_info=response.version,
        type_url=type_url,
        nonce=nonce,
        resources=[r.body for r in response.resources],
    )
