"""The exception family of HBONE's driver: what went wrong, in terms a proxy can act on.

Each maps to one of ztunnel's `response_flags` for telemetry (istio-ambient-protocols §7):
TLS_FAILURE, IDENTITY_ERROR, CONNECT (refused or reset by the far side).
"""

from __future__ import annotations

from collections.abc import Collection


class HboneError(Exception):
    """Base of every error the HBONE driver raises; `response_flag` is the telemetry label."""

    response_flag = "CONNECT"


class TlsError(HboneError):
    """The TLS handshake failed (bad or foreign certificate, TLS below 1.3, no ALPN h2) or the
    TCP connection under it could not be made."""

    response_flag = "TLS_FAILURE"


class IdentityMismatch(HboneError):
    """The server's SPIFFE identity (its URI SAN) is not one of the identities expected for the
    destination; the connection was closed before any request was sent."""

    response_flag = "IDENTITY_ERROR"

    def __init__(self, expected: Collection[str], actual: str | None) -> None:
        wanted = ", ".join(sorted(expected)) or "(none)"
        super().__init__(f"peer identity is {actual or 'absent'}, expected one of {wanted}")
        self.expected = frozenset(expected)
        self.actual = actual


class StreamRefused(HboneError):
    """The server answered the CONNECT with `status` (400 bad request, 401 denied by policy, 503
    no upstream)."""

    def __init__(self, status: int, authority: str) -> None:
        super().__init__(f"CONNECT {authority} refused with status {status}")
        self.status = status
        self.authority = authority


class StreamResetError(HboneError):
    """The stream was aborted by RST_STREAM (`error_code`, RFC 9113 §7), or its connection was
    lost (then `remote` is True and `error_code` CANCEL)."""

    def __init__(self, error_code: int, remote: bool, detail: str = "") -> None:
        who = "the peer" if remote else "this side"
        super().__init__(f"stream reset by {who} (HTTP/2 error {error_code}){': ' + detail if detail else ''}")
        self.error_code = error_code
        self.remote = remote


class ConnectionClosedError(HboneError):
    """The HBONE connection is closing or closed (GOAWAY or lost); open the stream elsewhere."""
