"""One HTTP request as the L7 decisions see it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

# Where JWT authentication leaves the verified payload in a request's dynamic metadata, and the
# key it uses when the provider sets no `payload_in_metadata` (the contract sets "payload").
JWT_AUTHN_FILTER = "envoy.filters.http.jwt_authn"
DEFAULT_PAYLOAD_KEY = "payload"


@dataclass
class Request:
    """A request on a waypoint filter chain.

    `headers` are (lower-case name, value) pairs as received, without HTTP/2 pseudo-headers;
    `path` includes the query string; `source_principal` is the HBONE peer's SPIFFE URI (None when
    the peer had no certificate); `jwt_payload` is set by JWT authentication when a valid token
    was presented; `filter_metadata` is Envoy's dynamic metadata by filter name (JWT
    authentication writes `{"envoy.filters.http.jwt_authn": {"payload": {...}}}` there, and RBAC
    `metadata` matchers read it); `destination_ip` is the VIP the CONNECT named, when known.
    """

    method: str
    path: str
    authority: str
    headers: list[tuple[str, str]]
    destination_port: int
    source_ip: str
    source_principal: str | None = None
    jwt_payload: dict[str, Any] | None = None
    scheme: str = "http"
    protocol: str = "HTTP/1.1"  # or "HTTP/2"; gRPC is HTTP/2 with content-type application/grpc
    extra: dict[str, Any] = field(default_factory=dict)
    filter_metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    destination_ip: str | None = None

    def header(self, name: str) -> str | None:
        """The first value of a header (`:method`, `:path`, `:authority` included), or None."""
        pseudo = {":method": self.method, ":path": self.path, ":authority": self.authority, ":scheme": self.scheme}
        if name in pseudo:
            return pseudo[name]
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def header_joined(self, name: str) -> str | None:
        """Every value of a header joined with "," (Envoy's `getAllOfHeaderAsString`, what its
        header matchers see), pseudo-headers included; None when absent."""
        name = name.lower()
        if name.startswith(":"):
            return self.header(name)
        values = [v for k, v in self.headers if k == name]
        return ",".join(values) if values else None

    def dynamic_metadata(self, filter_name: str) -> dict[str, Any]:
        """The dynamic metadata a filter left for this request; a payload set directly on
        `jwt_payload` is visible under the JWT filter's default key too."""
        found = self.filter_metadata.get(filter_name)
        if found is not None:
            return found
        if filter_name == JWT_AUTHN_FILTER and self.jwt_payload is not None:
            return {DEFAULT_PAYLOAD_KEY: self.jwt_payload}
        return {}

    @property
    def is_grpc(self) -> bool:
        """Whether this is a gRPC request (content-type application/grpc, +proto etc.)."""
        return (self.header("content-type") or "").startswith("application/grpc")

    @property
    def url_path(self) -> str:
        """The path without the query string (what Envoy's `url_path` matchers see)."""
        return self.path.split("?", 1)[0]


class UpstreamFailure(enum.Enum):
    """Why an upstream attempt ended without a response (Envoy's stream reset reasons)."""

    CONNECT_FAILURE = "connect-failure"  # could not connect (refused, unreachable, connect timeout)
    REFUSED_STREAM = "refused-stream"  # HTTP/2 REFUSED_STREAM: the upstream did not process it
    RESET = "reset"  # the connection or stream was reset after connecting
    PER_TRY_TIMEOUT = "per-try-timeout"  # the attempt's per_try_timeout expired
    OVERFLOW = "overflow"  # a circuit breaker refused the attempt locally


@dataclass(frozen=True, kw_only=True)
class UpstreamResult:
    """How one upstream attempt ended: a response (`status`, `headers`) or a `failure`."""

    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    failure: UpstreamFailure | None = None

    def header(self, name: str) -> str | None:
        """The first value of a response header, or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    @property
    def effective_status(self) -> int:
        """The status the downstream would see: a failure is answered 503, a per-try timeout 504
        (Envoy's local replies, also what outlier detection counts for local-origin errors)."""
        if self.status is not None:
            return self.status
        return 504 if self.failure is UpstreamFailure.PER_TRY_TIMEOUT else 503


class ConfigError(ValueError):
    """An Envoy message the L7 engine cannot honour faithfully (a field it does not implement, a
    malformed value). The waypoint NACKs the resource with this message rather than enforcing
    something weaker than what the control plane asked for."""
