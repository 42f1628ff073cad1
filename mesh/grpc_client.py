"""The client side of the mesh's gRPC (mesh-ca, mesh-xds): grpclib channels and one error type.

Every gRPC client here (ztunnel, the waypoint, meshctl, the tests' simulated proxies) uses grpclib,
a pure-asyncio gRPC over the `h2` package the data plane already loads for HBONE. grpcio's client
would cost each node proxy about 16 MB of resident memory (its C core, mapped and relocated) and
a few threads; ztunnel's budget is 60 MB in all (bench/README.md). The servers stay on grpcio:
the wire is the same HTTP/2 gRPC, and the integration tests run these clients against them.

Failures of any kind (a status from the server, a refused or reset connection, a TLS failure, a
deadline) come out as `RpcError(code, details)` with gRPC's status code names, so callers handle
one type.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from h2.exceptions import H2Error

from mesh.plain_settings import host_port

__all__ = ["Channel", "RpcError", "open_channel", "rpc_errors", "tls_context"]


@dataclass(frozen=True)
class RpcError(Exception):
    """A call that failed: gRPC's status code name (`UNAVAILABLE`, `PERMISSION_DENIED`, ...) and
    what the server or the connection said."""

    code: str
    details: str

    def __str__(self) -> str:
        return f"{self.code}: {self.details}"


def tls_context(roots_pem: bytes, chain_pem: bytes | None = None, key_pem: bytes | None = None) -> ssl.SSLContext:
    """A client context that trusts only `roots_pem`, checks the server's name, offers ALPN `h2`
    (gRPC servers insist on it) and, given a chain and key, presents them (mTLS)."""
    context = ssl.create_default_context(cadata=roots_pem.decode())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    if chain_pem is not None and key_pem is not None:
        from mesh.hbone.tls import load_chain

        load_chain(context, chain_pem, key_pem)
    return context


def open_channel(address: str, tls: ssl.SSLContext | None, server_name: str | None = None) -> Channel:
    """A channel to `HOST:PORT` (it connects on the first call); plaintext when `tls` is None.
    `server_name` checks the server's certificate for that name instead of the address's host."""
    host, port = host_port(address)
    config = Configuration(ssl_target_name_override=server_name) if server_name else None
    return Channel(host, port, ssl=tls, config=config)


@contextlib.contextmanager
def rpc_errors() -> Iterator[None]:
    """Turn whatever a grpclib call can raise into RpcError (the caller's one type)."""
    try:
        yield
    except GRPCError as e:
        raise RpcError(e.status.name, e.message or "") from None
    except TimeoutError:  # before OSError: in Python 3.11 it is one
        raise RpcError("DEADLINE_EXCEEDED", "deadline exceeded") from None
    except (StreamTerminatedError, ProtocolError, H2Error) as e:
        raise RpcError("UNAVAILABLE", f"stream ended: {e or type(e).__name__}") from None
    except OSError as e:  # refused, reset, unreachable, TLS verification
        raise RpcError("UNAVAILABLE", f"{type(e).__name__}: {e}") from None
    except asyncio.IncompleteReadError as e:
        raise RpcError("UNAVAILABLE", f"connection closed: {e}") from None
