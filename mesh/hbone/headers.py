"""HBONE request fields: `:authority` parsing and the `forwarded` and `baggage` headers.

Pure functions (istio-ambient-protocols §6, "`:authority`" and "Request headers").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import quote

# A DNS name of RFC 1123 labels; double HBONE's inner CONNECT names `hostname:port`.
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")


class AuthorityError(ValueError):
    """An `:authority` that is not `host:port` (HBONE answers such a request with 400)."""


def parse_authority(authority: str) -> tuple[str, int]:
    """`(host, port)` from `ip:port`, `[ipv6]:port` or `hostname:port`; `AuthorityError` otherwise.

    RFC 9113 §8.5: a CONNECT's `:authority` is the host and port to connect to; a port is
    required. IPv6 literals are bracketed (RFC 3986 §3.2.2) and returned without brackets.
    """
    host, sep, port_text = authority.rpartition(":")
    if not sep or not host:
        raise AuthorityError(f"{authority!r} is not host:port")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise AuthorityError(f"{authority!r}: port {port_text!r} is not 1-65535")
    if host.startswith("["):
        if not host.endswith("]"):
            raise AuthorityError(f"{authority!r}: unterminated IPv6 literal")
        try:
            return str(ipaddress.IPv6Address(host[1:-1])), int(port_text)
        except ValueError:
            raise AuthorityError(f"{authority!r}: {host} is not an IPv6 address") from None
    if ":" in host:
        raise AuthorityError(f"{authority!r}: an IPv6 address must be in brackets")
    if not set(host) <= _HOST_CHARS or len(host) > 253:
        raise AuthorityError(f"{authority!r}: {host!r} is neither an IPv4 address nor a DNS name")
    return host, int(port_text)


def format_authority(host: str, port: int) -> str:
    """The `:authority` for `host` and `port`, bracketing an IPv6 literal."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def forwarded_header(client_ip: str, client_port: int | None = None, host: str | None = None) -> str:
    """The `forwarded` value ztunnel sends: `for="ip:port"`, plus `;host=svc` when the service is
    known (RFC 7239 §4 and §6: a node with a port, or an IPv6 node, is a quoted string)."""
    node = f"[{client_ip}]" if ":" in client_ip else client_ip
    if client_port is not None:
        node = f"{node}:{client_port}"
    value = f'for="{node}"'
    if host:
        value += f";host={host}"
    return value


def baggage_header(entries: Mapping[str, str]) -> str:
    """A W3C baggage value (`k=v,k=v`) of the non-empty entries, values percent-encoded.

    ztunnel sends `k8s.cluster.name`, `k8s.namespace.name`, `k8s.<kind>.name`, `service.name`,
    `service.version`, `cloud.region`, `cloud.availability_zone`.
    """
    return ",".join(f"{key}={quote(value, safe='')}" for key, value in entries.items() if value)
