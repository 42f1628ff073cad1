"""Which filter chain serves an ingress connection, and which ports to listen on. Pure.

Chain choice follows Envoy's `filter_chain_match.server_names` (and the Gateway API's hostname
rules, which mesh-xds turns into them): an exact name wins, then the longest wildcard suffix
(`*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com`), then the
port's chain without `server_names`, which also serves clients that send no SNI. No match and no
default: the connection is refused (docs/ingress.md, "Data path (contract)").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..config import FilterChain


def _wildcard_matches(pattern: str, name: str) -> bool:
    return pattern.startswith("*.") and name.endswith(pattern[1:]) and len(name) > len(pattern) - 1


def choose_chain(chains: Iterable[FilterChain], server_name: str | None) -> FilterChain | None:
    """The chain for a connection that offered `server_name` (None: no SNI), or None."""
    name = (server_name or "").rstrip(".").lower()
    best: FilterChain | None = None
    best_suffix = -1
    default: FilterChain | None = None
    for chain in chains:
        if not chain.server_names:
            default = default or chain
            continue
        if not name:
            continue
        for pattern in chain.server_names:
            if pattern == name:
                return chain
            if _wildcard_matches(pattern, name) and len(pattern) > best_suffix:
                best, best_suffix = chain, len(pattern)
    return best or default


def uses_tls(chains: Iterable[FilterChain]) -> bool:
    """Whether a port terminates TLS: any of its chains has a TLS transport socket (the Gateway
    API does not let HTTP and HTTPS listeners share a port)."""
    return any(chain.tls is not None for chain in chains)


@dataclass(frozen=True)
class PortChanges:
    """What to do to the open listeners: ports to open and ports to close."""

    open: tuple[int, ...]
    close: tuple[int, ...]


def port_changes(listening: Iterable[int], wanted: Mapping[int, object] | Iterable[int]) -> PortChanges:
    """The ports to open (wanted, not listening) and to close (listening, no longer wanted),
    each sorted."""
    have, want = set(listening), set(wanted)
    return PortChanges(open=tuple(sorted(want - have)), close=tuple(sorted(have - want)))
