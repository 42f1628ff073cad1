"""Unit tests for mesh.identity: SPIFFE workload identities, their one spelling, and refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.identity import DEFAULT_TRUST_DOMAIN, Identity, IdentityError

pytestmark = pytest.mark.unit

_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
labels = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\Z")
subdomains = st.lists(labels, min_size=1, max_size=4).map(".".join)


def test_str_is_the_spiffe_uri() -> None:
    ident = Identity("cluster.local", "default", "sleep")
    assert str(ident) == "spiffe://cluster.local/ns/default/sa/sleep"


def test_default_trust_domain() -> None:
    assert DEFAULT_TRUST_DOMAIN == "cluster.local"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("spiffe://cluster.local/ns/default/sa/sleep", Identity("cluster.local", "default", "sleep")),
        ("spiffe://example.org/ns/istio-system/sa/ztunnel", Identity("example.org", "istio-system", "ztunnel")),
        ("spiffe://td/ns/a/sa/b.c-d", Identity("td", "a", "b.c-d")),  # SA names are subdomains
        ("spiffe://1.2/ns/0/sa/9", Identity("1.2", "0", "9")),
    ],
)
def test_parse_valid(uri: str, expected: Identity) -> None:
    assert Identity.parse(uri) == expected
    assert str(Identity.parse(uri)) == uri


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("", "does not start with"),
        ("SPIFFE://cluster.local/ns/a/sa/b", "does not start with"),
        ("https://cluster.local/ns/a/sa/b", "does not start with"),
        ("spiffe:/cluster.local/ns/a/sa/b", "does not start with"),
        ("spiffe://cluster.local", "not of the form"),
        ("spiffe://cluster.local/", "not of the form"),
        ("spiffe://cluster.local/ns/a", "not of the form"),
        ("spiffe://cluster.local/ns/a/sa/b/", "not of the form"),
        ("spiffe://cluster.local/ns/a/sa/b/extra", "not of the form"),
        ("spiffe://cluster.local/namespace/a/sa/b", "not of the form"),
        ("spiffe://cluster.local/ns/a/serviceaccount/b", "not of the form"),
        ("spiffe://cluster.local/sa/b/ns/a", "not of the form"),
        ("spiffe://cluster.local//ns/a/sa/b", "not of the form"),
        ("spiffe:///ns/a/sa/b", "trust domain is empty"),
        ("spiffe://cluster.local/ns//sa/b", "namespace is empty"),
        ("spiffe://cluster.local/ns/a/sa/", "service account is empty"),
        ("spiffe://Cluster.Local/ns/a/sa/b", "trust domain 'Cluster.Local'"),
        ("spiffe://cluster.local:443/ns/a/sa/b", "trust domain"),
        ("spiffe://user@cluster.local/ns/a/sa/b", "trust domain"),
        ("spiffe://cluster_local/ns/a/sa/b", "trust domain"),
        ("spiffe://cluster.local./ns/a/sa/b", "trust domain"),
        ("spiffe://cluster.local/ns/Default/sa/b", "namespace 'Default'"),
        ("spiffe://cluster.local/ns/a.b/sa/c", "namespace 'a.b'"),  # a label, not a subdomain
        ("spiffe://cluster.local/ns/-a/sa/b", "namespace"),
        ("spiffe://cluster.local/ns/" + "a" * 64 + "/sa/b", "no more than 63"),
        ("spiffe://cluster.local/ns/a/sa/B", "service account 'B'"),
        ("spiffe://cluster.local/ns/a/sa/b?x=1", "service account"),
        ("spiffe://cluster.local/ns/a/sa/b#frag", "service account"),
        ("spiffe://cluster.local/ns/a/sa/b%2Fc", "service account"),
        ("spiffe://cluster.local/ns/a/sa/b c", "service account"),
        ("spiffe://cluster.local/ns/a/sa/" + "b" * 254, "no more than 253"),
        ("spiffe://clüster.local/ns/a/sa/b", "trust domain"),
    ],
)
def test_parse_refuses(uri: str, fragment: str) -> None:
    with pytest.raises(IdentityError) as caught:
        Identity.parse(uri)
    assert fragment in str(caught.value)


def test_parse_refuses_non_strings() -> None:
    with pytest.raises(IdentityError, match="a SPIFFE ID is a string"):
        Identity.parse(b"spiffe://cluster.local/ns/a/sa/b")  # type: ignore[arg-type]


def test_identity_error_is_a_value_error() -> None:
    assert issubclass(IdentityError, ValueError)


@pytest.mark.parametrize(
    ("td", "ns", "sa"),
    [("", "a", "b"), ("cluster.local", "A", "b"), ("cluster.local", "a", "b/c"), ("td/x", "a", "b")],
)
def test_construction_validates(td: str, ns: str, sa: str) -> None:
    with pytest.raises(IdentityError):
        Identity(td, ns, sa)


def test_frozen_and_hashable() -> None:
    ident = Identity("cluster.local", "a", "b")
    assert {ident: 1}[Identity.parse("spiffe://cluster.local/ns/a/sa/b")] == 1
    with pytest.raises(AttributeError):
        ident.namespace = "c"  # type: ignore[misc]


@given(td=subdomains, ns=labels, sa=subdomains)
def test_round_trip(td: str, ns: str, sa: str) -> None:
    ident = Identity(td, ns, sa)
    assert Identity.parse(str(ident)) == ident


@given(st.text(alphabet=_ALNUM + "-./:_%?#@ A", max_size=60))
def test_parse_never_raises_anything_else(tail: str) -> None:
    """Arbitrary text either parses to an identity that prints back identically, or is refused."""
    uri = "spiffe://" + tail
    try:
        ident = Identity.parse(uri)
    except IdentityError:
        return
    assert str(ident) == uri
