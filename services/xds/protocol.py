"""Delta xDS, per stream and type, as pure state transitions (no gRPC, no asyncio).

Rules (Envoy's xDS protocol, "Incremental xDS"; Istio's and go-control-plane's practice):
- The first request of a type starts a subscription: wildcard when it names nothing or names
  `*`; `initial_resource_versions` says what the client already holds, so unchanged resources
  are not sent again after a reconnect.
- Later requests subscribe and unsubscribe names; `*` toggles wildcard. Names may be aliases
  (on-demand lookups such as `/198.18.16.5` or `ns/host.example`): the answer names the resource
  and lists the alias in `aliases`; an alias that resolves to nothing is answered in
  `removed_resources`.
- A request with a `response_nonce` acknowledges that response: without `error_detail` it is an
  ACK, with it a NACK (the client keeps its last good state; we forget what that response
  carried so the next change re-evaluates it). A nonce other than the latest one sent is stale
  and the request is ignored.
- At most one response per type is unacknowledged; changes that arrive meanwhile are merged and
  sent after the ACK or NACK (back-pressure, and correct NACK bookkeeping).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field

WILDCARD = "*"


def all_visible(_name: str) -> bool:
    """The visibility filter of a stream that sees every resource of a type (compared by identity:
    such a stream may be sent a table whole, see `Subscription.takes_whole`)."""
    return True


@dataclass(frozen=True, slots=True)
class Resource:
    """One resource as served: its name, content version, serialized `Any`, and lookup keys."""

    name: str
    version: str
    body: bytes  # a serialized google.protobuf.Any
    keys: tuple[str, ...] = ()  # aliases it answers to (on-demand lookups)


@dataclass
class Table:
    """The current resources of one type and their lookup keys; replaced whole on each change."""

    version: int = 0
    resources: dict[str, Resource] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # alias -> resource name
    _versions: dict[str, str] | None = field(default=None, repr=False, compare=False)

    def versions(self) -> Mapping[str, str]:
        """name -> version of every resource, built once (a table never changes once published):
        what a client holds after being sent the whole table, shared by all such clients."""
        if self._versions is None:
            self._versions = {name: r.version for name, r in self.resources.items()}
        return self._versions

    def resolve(self, name: str) -> Resource | None:
        resource = self.resources.get(name)
        if resource is None and name in self.keys:
            resource = self.resources.get(self.keys[name])
        return resource


@dataclass(frozen=True)
class Request:
    """What the protocol needs from a DeltaDiscoveryRequest."""

    subscribe: tuple[str, ...] = ()
    unsubscribe: tuple[str, ...] = ()
    initial_versions: Mapping[str, str] = field(default_factory=dict)
    nonce: str = ""
    error: str | None = None  # error_detail.message of a NACK


@dataclass(frozen=True)
class Response:
    resources: tuple[Resource, ...]
    removed: tuple[str, ...]
    aliases: Mapping[str, tuple[str, ...]]  # resource name -> the requested aliases it answers


class KnownVersions(MutableMapping[str, str]):
    """What a client holds: a shared, read-only base (a table's `versions()`, when the client was
    sent that table whole) under the client's own differences. A thousand ztunnels holding the
    same 100k Addresses then share one dict instead of holding a thousand copies."""

    __slots__ = ("_base", "_len", "_overlay")

    def __init__(self, base: Mapping[str, str]) -> None:
        self._base = base
        self._overlay: dict[str, str | None] = {}  # None: removed from the base
        self._len = len(base)

    def __getitem__(self, name: str) -> str:
        if name in self._overlay:
            version = self._overlay[name]
            if version is None:
                raise KeyError(name)
            return version
        return self._base[name]

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        version = self._overlay.get(name, self._base.get(name)) if self._overlay else self._base.get(name)
        return default if version is None else version

    def __contains__(self, name: object) -> bool:
        if name in self._overlay:
            return self._overlay[name] is not None  # type: ignore[index]
        return name in self._base

    def __setitem__(self, name: str, version: str) -> None:
        if name not in self:
            self._len += 1
        self._overlay[name] = version

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._len -= 1
        if name in self._base:
            self._overlay[name] = None
        else:
            del self._overlay[name]

    def __iter__(self) -> Iterator[str]:
        overlay = self._overlay
        for name in self._base:
            if overlay.get(name, "") is not None:
                yield name
        for name, version in overlay.items():
            if version is not None and name not in self._base:
                yield name

    def __len__(self) -> int:
        return self._len


@dataclass
class Subscription:
    """One type on one stream: what the client asked for and what it holds."""

    wildcard: bool = False
    names: set[str] = field(default_factory=set)  # explicit names and aliases
    known: MutableMapping[str, str] = field(default_factory=dict)  # resource name -> version the client holds
    absent: set[str] = field(default_factory=set)  # requested names already answered as absent
    answered_aliases: set[str] = field(default_factory=set)  # aliases already sent with their resource
    nonce: str = ""  # the latest response sent
    awaiting: bool = False  # that response is not yet acknowledged
    inflight: dict[str, str | None] = field(default_factory=dict)  # before-versions of what it carried
    inflight_whole: bool = False  # it carried a whole table to a client that held nothing
    dirty: bool = False  # something may have changed for this client since the last response
    must_answer: bool = False  # a request that needs an answer even when there is nothing to send
    acked_version: int = 0
    sent_version: int = 0
    last_nack: str | None = None

    # --- requests ---------------------------------------------------------------------------------

    def on_request(self, req: Request, first: bool) -> str:
        """Fold a request in. Returns "stale", "nack", "ack" or "subscribe"."""
        if req.nonce and req.nonce != self.nonce:
            return "stale"
        outcome = "subscribe"
        if req.nonce:
            outcome = self._acknowledge(req.error)
        if first:
            self.known.update(req.initial_versions)
            self.wildcard = not req.subscribe or WILDCARD in req.subscribe
            self.dirty = self.must_answer = True
        for name in req.subscribe:
            if name == WILDCARD:
                self.wildcard = self.dirty = self.must_answer = True
            elif name not in self.names:
                self.names.add(name)
                self.absent.discard(name)
                self.answered_aliases.discard(name)
                self.dirty = self.must_answer = True
        for name in req.unsubscribe:
            if name == WILDCARD:
                self.wildcard = False
            else:
                self.names.discard(name)
                self.absent.discard(name)
                self.answered_aliases.discard(name)
                self.known.pop(name, None)  # the client drops what it unsubscribed
        return outcome

    def _acknowledge(self, error: str | None) -> str:
        self.awaiting = False
        inflight, self.inflight = self.inflight, {}
        whole, self.inflight_whole = self.inflight_whole, False
        if error is None:
            self.acked_version = self.sent_version
            self.last_nack = None
            return "ack"
        if whole:  # the client kept what it held before: nothing
            self.known = {}
        for name, before in inflight.items():  # the client kept its previous versions
            if before is None:
                self.known.pop(name, None)
            else:
                self.known[name] = before
        self.last_nack = error
        return "nack"

    # --- responses --------------------------------------------------------------------------------

    def ready(self) -> bool:
        return self.dirty and not self.awaiting

    def compute(self, table: Table, visible: Callable[[str], bool], changed: Iterable[str] | None = None) -> Response:
        """What the client lacks: resources whose version differs from what it holds, and removals.

        `changed` limits the wildcard work to those names (a push); None considers everything.
        """
        wanted, aliases, absent = self._explicit(table, visible)
        if self.wildcard:
            names = table.resources.keys() if changed is None else [n for n in changed if n in table.resources]
            for name in names:
                if visible(name):
                    wanted.setdefault(name, table.resources[name])
        candidates = self.known.keys() if changed is None else [n for n in changed if n in self.known]
        removed = [n for n in candidates if n not in wanted]
        send = tuple(
            r
            for name, r in sorted(wanted.items())
            if self.known.get(name) != r.version or any(a not in self.answered_aliases for a in aliases.get(name, ()))
        )
        return Response(send, tuple(sorted(set(removed) | set(absent))), {k: tuple(v) for k, v in aliases.items()})

    def _explicit(
        self, table: Table, visible: Callable[[str], bool]
    ) -> tuple[dict[str, Resource], dict[str, list[str]], list[str]]:
        wanted: dict[str, Resource] = {}
        aliases: dict[str, list[str]] = {}
        absent: list[str] = []
        for requested in sorted(self.names):
            resource = table.resolve(requested)
            if resource is None or not visible(resource.name):
                if requested not in self.absent:
                    absent.append(requested)
                continue
            wanted[resource.name] = resource
            if requested != resource.name:
                aliases.setdefault(resource.name, []).append(requested)
        return wanted, aliases, absent

    def takes_whole(self, table: Table, visible: Callable[[str], bool]) -> bool:
        """Whether what this client lacks is exactly the whole table: a wildcard subscription with
        no names, holding nothing, that sees everything. It can then be sent a response shared by
        all such clients (Hub.pump) instead of one computed for it."""
        return (
            self.wildcard
            and visible is all_visible
            and not self.names
            and not self.known
            and not self.absent
            and bool(table.resources)
        )

    def sent_whole(self, table: Table, nonce: str) -> None:
        """Record the whole table as sent (see `takes_whole`)."""
        self.known = KnownVersions(table.versions())
        self.inflight = {}
        self.inflight_whole = True
        self.nonce = nonce
        self.awaiting = True
        self.dirty = self.must_answer = False
        self.sent_version = table.version

    def sent(self, response: Response, nonce: str, table_version: int) -> None:
        """Record a response as sent (held by the client until a NACK says otherwise)."""
        self.inflight = {}
        self.inflight_whole = False
        for resource in response.resources:
            self.inflight[resource.name] = self.known.get(resource.name)
            self.known[resource.name] = resource.version
            self.answered_aliases.update(response.aliases.get(resource.name, ()))
        for name in response.removed:
            if name in self.known:
                self.inflight[name] = self.known.pop(name)
            if name in self.names:
                self.absent.add(name)
        self.nonce = nonce
        self.awaiting = True
        self.dirty = self.must_answer = False
        self.sent_version = table_version

    def settle(self, table_version: int | None = None) -> None:
        """Nothing to send after all: the client already holds what `table_version` would give it,
        so (unless a response is unacknowledged) it is in sync with that version."""
        self.dirty = False
        if table_version is not None and not self.awaiting:
            self.acked_version = self.sent_version = max(self.sent_version, table_version)


def is_empty(response: Response) -> bool:
    return not response.resources and not response.removed
