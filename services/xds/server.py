"""The gRPC surface: Envoy's AggregatedDiscoveryService, delta (ztunnel) and state of the world
(stock gRPC clients, which only speak `StreamAggregatedResources`).

Thin (STYLE): authenticate, then run two coroutines per stream, one reading requests into the
hub and one writing what the stream's pump queues.

Who may read what: both methods take the same peers (peers.authenticate): a ztunnel with its
node token, or a workload with a client certificate that chains to the mesh's roots (mTLS, as a
gRPC bootstrap's `channel_creds: tls` with `certificate_file`/`private_key_file` presents it).
Any authenticated peer may subscribe to any type, Envoy's included; what it then sees of a type
is the hub's visibility filter's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf.message import Message

from mesh.node_auth import NodeAuthenticator

from . import sotw
from .hub import Connection, Hub, Presliced, SotwConnection, from_message
from .peers import Unauthenticated, authenticate

log = logging.getLogger("mesh-xds.server")


def _serialize(message: Presliced | Message) -> bytes:
    """A response as the pump queued it: serialized ahead (a whole table) or a message."""
    return message.join() if isinstance(message, Presliced) else message.SerializeToString()


def add_to_server(servicer: AdsServicer, server: grpc.aio.Server) -> None:
    """Register the ADS methods as `ads_pb2_grpc` would, with responses that may be pre-serialized."""
    handlers = {
        "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
            servicer.DeltaAggregatedResources,
            request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
            response_serializer=_serialize,
        ),
        "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            servicer.StreamAggregatedResources,
            request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=_serialize,
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("envoy.service.discovery.v3.AggregatedDiscoveryService", handlers),)
    )


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, hub: Hub, nodes: NodeAuthenticator):
        self.hub = hub
        self.nodes = nodes

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        async for response in self._stream(context, request_iterator, sotw_stream=False):
            yield response

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        async for response in self._stream(context, request_iterator, sotw_stream=True):
            yield response

    async def _stream(
        self, context: grpc.aio.ServicerContext, requests: AsyncIterator, *, sotw_stream: bool
    ) -> AsyncIterator:
        """One stream of either protocol: authenticate, then relay what the stream's pump queues
        while a reader folds the client's requests into the hub."""
        protocol = "sotw" if sotw_stream else "delta"
        try:
            peer = await authenticate(context, self.nodes)
        except Unauthenticated as e:
            log.info("stream refused", extra={"peer": context.peer(), "reason": e.reason})
            # Take the client's first request before ending the stream: a gRPC Python client whose
            # send races with the end of the call reports INTERNAL instead of our status.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(anext(aiter(requests)), 1.0)
            context.set_code(grpc.StatusCode.UNAUTHENTICATED)
            context.set_details("authentication failed")
            return
        conn = self.hub.new_connection(peer, sotw_stream=sotw_stream)
        log.info("stream opened", extra={"stream": conn.id, "peer": peer.describe(), "protocol": protocol})
        if sotw_stream:
            assert isinstance(conn, SotwConnection)
            reader = asyncio.create_task(self._read_sotw(conn, requests))
            pump = asyncio.create_task(self.hub.pump_sotw(conn))
        else:
            reader = asyncio.create_task(self._read(conn, requests))
            pump = asyncio.create_task(self.hub.pump(conn))
        try:
            while True:
                getter = asyncio.create_task(conn.out.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                    continue
                getter.cancel()
                break  # the client closed its side
        finally:
            for task in (reader, pump):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self.hub.drop(conn)
            log.info("stream closed", extra={"stream": conn.id, "peer": peer.describe(), "protocol": protocol})

    async def _read(self, conn: Connection, requests: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest]) -> None:
        async for request in requests:
            if request.HasField("node") and not conn.node_id:
                conn.node_id = request.node.id
            self.hub.on_request(conn, request.type_url, from_message(request))

    async def _read_sotw(self, conn: SotwConnection, requests: AsyncIterator[discovery_pb2.DiscoveryRequest]) -> None:
        async for request in requests:
            if request.HasField("node") and not conn.node_id:
                conn.node_id = request.node.id
            if request.type_url:  # ADS requests must name their type; one that does not is ignored
                self.hub.on_sotw_request(conn, request.type_url, sotw.from_message(request))
