"""HBONE: TCP tunnelled as HTTP/2 CONNECT over mutual TLS, port 15008 (DESIGN §8).

Shared by ztunnel and the waypoint. Layers, bottom up:
- `protocol`: the sans-IO core (ClientConnection, ServerConnection) and its `events`;
- `tls`: TLS 1.3 contexts, SPIFFE identity checks, per-destination server certificates;
- `driver`: asyncio connections (HboneClient, HboneServer) and their `stream`s;
- `pool`: connections shared by (source identity, destination identities, destination);
- `splice`: relaying a stream to and from a TCP connection.
"""

from .driver import HboneClient, HboneServer
from .errors import ConnectionClosedError, HboneError, IdentityMismatch, StreamRefused, StreamResetError, TlsError
from .headers import baggage_header, format_authority, forwarded_header, parse_authority
from .pool import Pool, PoolKey
from .splice import SpliceResult, Tunnel, open_tcp, splice, start_splice
from .stream import HboneStream
from .tls import ContextsByAddress, client_context, peer_identity, server_context

__all__ = [
    "ConnectionClosedError",
    "ContextsByAddress",
    "HboneClient",
    "HboneError",
    "HboneServer",
    "HboneStream",
    "IdentityMismatch",
    "Pool",
    "PoolKey",
    "SpliceResult",
    "StreamRefused",
    "StreamResetError",
    "TlsError",
    "Tunnel",
    "baggage_header",
    "client_context",
    "format_authority",
    "forwarded_header",
    "open_tcp",
    "parse_authority",
    "peer_identity",
    "server_context",
    "splice",
    "start_splice",
]
