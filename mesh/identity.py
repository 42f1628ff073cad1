"""SPIFFE workload identities: `spiffe://{trust domain}/ns/{namespace}/sa/{service account}`.

This is Istio's identity shape (istio/istio: pkg/spiffe), which ztunnel, the CA and the
authorization policies all speak. Only that shape is accepted: a SPIFFE ID with any other path
is a valid SPIFFE ID (SPIFFE-ID §2.2) but not a mesh workload identity, so `parse` refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

from mesh.names import dns1123_label_error, dns1123_subdomain_error

DEFAULT_TRUST_DOMAIN = "cluster.local"

_SCHEME = "spiffe://"


class IdentityError(ValueError):
    """A string or part that is not a mesh SPIFFE identity; the message says which part and why."""


def _part_error(trust_domain: str, namespace: str, service_account: str) -> str | None:
    # The trust domain is held to a lowercase DNS name, stricter than SPIFFE-ID §2.1 (which also
    # allows '_'), because it is also the issuer's O= and Istio's own default is a DNS name.
    checks = (
        ("trust domain", trust_domain, dns1123_subdomain_error, "a lowercase DNS name"),
        ("namespace", namespace, dns1123_label_error, "an RFC 1123 label"),
        ("service account", service_account, dns1123_subdomain_error, "an RFC 1123 subdomain"),
    )
    for what, value, check, shape in checks:
        if not value:
            return f"{what} is empty"
        problem = check(value)
        if problem:
            return f"{what} {value!r} is not {shape}: {problem}"
    return None


@dataclass(frozen=True)
class Identity:
    """One workload identity. Construction validates every part, so an instance is always valid.

    `str(identity)` is the SPIFFE URI that goes into a certificate's URI SAN.
    """

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        problem = _part_error(self.trust_domain, self.namespace, self.service_account)
        if problem:
            raise IdentityError(problem)

    def __str__(self) -> str:
        return self.uri

    @cached_property
    def uri(self) -> str:
        """The SPIFFE URI, made once: proxies key pools and records by it for every connection."""
        return f"{_SCHEME}{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @classmethod
    def parse(cls, uri: str) -> Identity:
        """The identity that `uri` names; `IdentityError` unless it is exactly
        `spiffe://{td}/ns/{ns}/sa/{sa}` with valid parts.

        The scheme is matched case-sensitively and nothing else (port, user info, query,
        fragment, percent-encoding, trailing slash) is tolerated, as in go-spiffe's parser: two
        spellings of one identity would let a policy written for one miss the other.

        Proxies parse the peer's identity on every connection: the answers for the last few
        thousand URIs are kept (identities are immutable; refusals are not kept).
        """
        if cls is Identity and isinstance(uri, str):
            return _parse_cached(uri)
        return cls._parse(uri)

    @classmethod
    def _parse(cls, uri: str) -> Identity:
        if not isinstance(uri, str):
            raise IdentityError(f"a SPIFFE ID is a string, not {type(uri).__name__}")
        if not uri.startswith(_SCHEME):
            raise IdentityError(f"{uri!r} does not start with {_SCHEME!r}")
        parts = uri[len(_SCHEME) :].split("/")
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
            raise IdentityError(f"{uri!r} is not of the form spiffe://<trust domain>/ns/<namespace>/sa/<account>")
        trust_domain, _, namespace, _, service_account = parts
        try:
            return cls(trust_domain, namespace, service_account)
        except IdentityError as e:
            raise IdentityError(f"{uri!r}: {e}") from None


@lru_cache(maxsize=4096)
def _parse_cached(uri: str) -> Identity:
    return Identity._parse(uri)
