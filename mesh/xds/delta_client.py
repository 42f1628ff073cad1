"""A delta ADS client: subscribe, apply responses to a local cache, ACK or NACK each one.

ztunnel uses it for Address and Authorization; tests use it to play many ztunnels. On reconnect
it sends `initial_resource_versions` for what it holds, so the server resends only changes. The
stream is grpclib's (mesh/grpc_client.py); every failure surfaces as RpcError. Its messages are
the slim, wire-identical copies of Envoy's in proto/xds/delta_discovery.proto (a fraction of the
full xds-protos tree's memory in ztunnel).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from google.protobuf import any_pb2
from grpclib.client import Channel, Stream
from grpclib.const import Cardinality

from mesh.grpc_client import RpcError, rpc_errors
from mesh.proto_gen.xds import delta_discovery_pb2 as discovery_pb2

DELTA_ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"

Validator = Callable[[str, str, any_pb2.Any], str | None]  # (type, name, resource) -> error or None
# (type, updated {name: resource}, removed names) -> rejections ("name: reason"); the accepted rest is kept
Applier = Callable[[str, dict[str, any_pb2.Any], set[str]], list[str]]


@dataclass
class Held:
    version: str
    resource: any_pb2.Any


@dataclass
class TypeState:
    """What the client holds of one type, and the stream bookkeeping."""

    resources: dict[str, Held] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> name
    acked: int = 0
    nacked: int = 0
    last_nonce: str = ""
    system_version: str = ""
    subscribed: set[str] = field(default_factory=set)  # names asked for (non-wildcard watches)


class DeltaClient:
    """One stream's worth of delta xDS, reconnecting without losing what it holds."""

    def __init__(
        self,
        channel: Channel,
        node_id: str,
        *,
        token: str | None = None,
        validator: Validator | None = None,
        metadata: dict[str, str] | None = None,
        applier: Applier | None = None,
    ):
        self.channel = channel
        self.node_id = node_id
        self.token = token
        self.validator = validator
        self.applier = applier
        self.node_metadata = metadata or {}
        self.types: dict[str, TypeState] = {}
        self.wildcard: dict[str, bool] = {}
        self.updated = asyncio.Condition()
        self._queue: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest | None] = asyncio.Queue()

    def watch(self, type_url: str, wildcard: bool = True, names: Iterable[str] = ()) -> None:
        """Subscribe to a type (before or while running); `names` start a by-name subscription
        that every reconnect repeats."""
        self.types.setdefault(type_url, TypeState()).subscribed.update(names)
        self.wildcard[type_url] = wildcard

    def subscribe(self, type_url: str, names: list[str]) -> None:
        """On-demand: ask for names (resource names or lookup keys) on the running stream; they
        are remembered, so a reconnect asks for them again."""
        self.types.setdefault(type_url, TypeState()).subscribed.update(names)
        self._queue.put_nowait(discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=names))

    def unsubscribe(self, type_url: str, names: list[str]) -> None:
        """Stop receiving `names`; what is held of them is dropped (the server sends no removal
        for an unsubscribed name)."""
        state = self.types.setdefault(type_url, TypeState())
        state.subscribed.difference_update(names)
        for name in names:
            state.resources.pop(name, None)
        self._queue.put_nowait(discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_unsubscribe=names))

    def _first_requests(self) -> list[discovery_pb2.DeltaDiscoveryRequest]:
        out = []
        for i, (type_url, state) in enumerate(self.types.items()):
            request = discovery_pb2.DeltaDiscoveryRequest(
                type_url=type_url,
                initial_resource_versions={name: held.version for name, held in state.resources.items()},
            )
            if not self.wildcard.get(type_url, True):
                if state.subscribed:
                    request.resource_names_subscribe.extend(sorted(state.subscribed))
                else:
                    request.resource_names_subscribe.append("*")
                    request.resource_names_unsubscribe.append("*")
            if i == 0:
                request.node.id = self.node_id
                for key, value in self.node_metadata.items():
                    request.node.metadata.fields[key].string_value = value
            out.append(request)
        return out

    async def _send_requests(self, stream: Stream) -> None:
        for request in self._first_requests():
            await stream.send_message(request)
        while (request := await self._queue.get()) is not None:
            await stream.send_message(request)

    async def run_once(self) -> None:
        """One stream, until it ends or fails (raising RpcError)."""
        self._queue = asyncio.Queue()
        metadata = {"authorization": f"Bearer {self.token}"} if self.token else None
        sender: asyncio.Future[None] | None = None
        with rpc_errors():
            async with self.channel.request(
                DELTA_ADS,
                Cardinality.STREAM_STREAM,
                discovery_pb2.DeltaDiscoveryRequest,
                discovery_pb2.DeltaDiscoveryResponse,
                metadata=metadata,
            ) as stream:
                try:
                    await stream.send_request()
                    sender = asyncio.ensure_future(self._send_requests(stream))
                    while (response := await stream.recv_message()) is not None:
                        self._queue.put_nowait(self._apply(response))
                        async with self.updated:
                            self.updated.notify_all()
                    if sender.done():
                        sender.result()  # a failed send is the stream's failure
                    # The server ended the stream: close our side and read its status (an error
                    # status raises here).
                    sender.cancel()
                    await stream.end()
                    await stream.recv_trailing_metadata()
                finally:
                    if sender is not None:
                        sender.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await sender

    def _apply(self, response: discovery_pb2.DeltaDiscoveryResponse) -> discovery_pb2.DeltaDiscoveryRequest:
        state = self.types.setdefault(response.type_url, TypeState())
        errors: list[str] = []
        if self.applier is not None:
            # The consumer applies what it can and names what it refused (ztunnel's behaviour:
            # good resources are kept, the NACK lists the bad ones).
            updated = {r.name: r.resource for r in response.resources}
            errors = self.applier(response.type_url, updated, set(response.removed_resources))
        elif self.validator is not None:
            for r in response.resources:
                problem = self.validator(response.type_url, r.name, r.resource)
                if problem:
                    errors.append(f"{r.name}: {problem}")
        ack = discovery_pb2.DeltaDiscoveryRequest(type_url=response.type_url, response_nonce=response.nonce)
        state.last_nonce = response.nonce
        if errors:
            state.nacked += 1
            ack.error_detail.CopyFrom(discovery_pb2.Status(code=3, message="; ".join(errors)))
            if self.applier is None:
                return ack  # a NACK keeps the last good state
        refused = {e.split(":", 1)[0] for e in errors}
        for r in response.resources:
            if r.name in refused:
                continue
            state.resources[r.name] = Held(r.version, r.resource)
            for alias in r.aliases:
                state.aliases[alias] = r.name
        for name in response.removed_resources:
            state.resources.pop(name, None)
            state.aliases.pop(name, None)
        if not errors:
            state.acked += 1
        state.system_version = response.system_version_info
        return ack

    async def run(self, backoff: float = 0.01, max_backoff: float = 15.0) -> None:
        """Keep a stream up, reconnecting with exponential back-off (ztunnel's: 10 ms to 15 s)."""
        delay = backoff
        while True:
            with contextlib.suppress(RpcError):
                await self.run_once()
                delay = backoff
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with self.updated:
            await asyncio.wait_for(self.updated.wait_for(predicate), timeout)
