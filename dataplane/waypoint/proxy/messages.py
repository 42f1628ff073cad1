"""A request and a response as the codecs hand them to the pipeline and back. Pure data."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

Headers = list[tuple[str, str]]
Body = bytes | AsyncIterator[bytes]


@dataclass
class HttpRequest:
    """One downstream request, body read (bounded by MAX_REQUEST_BODY, so it can be retried and
    mirrored). `headers` are lower-case names without pseudo-headers; `target` is the path and
    query; `authority` is `:authority` or `Host`."""

    method: str
    target: str
    authority: str
    headers: Headers
    body: bytes = b""
    protocol: str = "HTTP/1.1"  # or HTTP/2
    scheme: str = "http"

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    @functools.cached_property
    def is_grpc(self) -> bool:  # asked several times per request; content-type never changes
        return (self.header("content-type") or "").startswith("application/grpc")


@dataclass
class HttpResponse:
    """One response to send downstream. `body` is bytes or an async iterator of chunks (streamed
    from the upstream); `length` is the body's size when known up front."""

    status: int
    headers: Headers = field(default_factory=list)
    body: Body = b""
    trailers: Headers | None = None
    length: int | None = None
    flags: str = "-"  # Envoy response flags: UO, UH, UT, URX, UF, FI, DI, NR, DC, ...
    details: str = ""  # e.g. "rbac_access_denied_matched_policy[none]"
    upstream_host: str = ""
    bytes_sent: int = 0  # counted by the codec as the body goes out


def text_response(status: int, body: str, flags: str = "-", details: str = "") -> HttpResponse:
    """A locally generated reply, as Envoy's: text/plain, the body as given."""
    data = body.encode()
    headers = [("content-type", "text/plain"), ("content-length", str(len(data)))]
    return HttpResponse(status, headers, data, length=len(data), flags=flags, details=details)


HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "host")
)
MAX_REQUEST_BODY = 16 << 20
