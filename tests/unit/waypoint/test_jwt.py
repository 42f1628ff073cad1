"""Unit tests for dataplane.waypoint.l7.jwt: Envoy jwt_authn with Istio's RequestAuthentication shape."""

from __future__ import annotations

import json

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2, empty_pb2

from dataplane.waypoint.l7.jwt import Authenticator, JwtStatus
from dataplane.waypoint.l7.model import JWT_AUTHN_FILTER

from .l7_requests import make_request

pytestmark = pytest.mark.unit

NOW = 1_700_000_000.0
ISSUER = "https://issuer.example"
OTHER_ISSUER = "https://other.example"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
STRANGER_KEY = ec.generate_private_key(ec.SECP256R1())


def jwks(*entries: tuple[object, str, str]) -> str:
    keys = []
    for private, kid, alg in entries:
        loader = pyjwt.algorithms.RSAAlgorithm if alg.startswith("RS") else pyjwt.algorithms.ECAlgorithm
        key = loader.to_jwk(private.public_key(), as_dict=True)
        keys.append({**key, "kid": kid, "alg": alg})
    return json.dumps({"keys": keys})


def token(key=EC_KEY, kid="ec-1", alg="ES256", **claims) -> str:
    payload = {"iss": ISSUER, "sub": "alice", "aud": "reviews", "exp": int(NOW) + 3600, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    return pyjwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def provider(issuer: str = ISSUER, audiences=("reviews",), keys: str | None = None, **fields) -> config_pb2.JwtProvider:
    p = config_pb2.JwtProvider(
        issuer=issuer, audiences=list(audiences), forward=True, payload_in_metadata="payload", **fields
    )
    p.local_jwks.inline_string = (
        keys if keys is not None else jwks((EC_KEY, "ec-1", "ES256"), (RSA_KEY, "rsa-1", "RS256"))
    )
    return p


def istio_config(**providers: config_pb2.JwtProvider) -> config_pb2.JwtAuthentication:
    """What mesh-xds sends: one rule for prefix `/` requiring any provider or none."""
    requires = config_pb2.JwtRequirement(
        requires_any=config_pb2.JwtRequirementOrList(
            requirements=[config_pb2.JwtRequirement(provider_name=n) for n in providers]
            + [config_pb2.JwtRequirement(allow_missing=empty_pb2.Empty())]
        )
    )
    return config_pb2.JwtAuthentication(
        providers=providers, rules=[config_pb2.RequirementRule(match=rc_pb2.RouteMatch(prefix="/"), requires=requires)]
    )


def authenticator(config: config_pb2.JwtAuthentication | None = None) -> Authenticator:
    return Authenticator(config or istio_config(origins=provider()), clock=lambda: NOW)


def bearer(tok: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {tok}")]


def test_no_token_passes_without_payload():
    request = make_request()
    result = authenticator().authenticate(request)
    assert result.ok and result.payload is None
    assert request.jwt_payload is None


@pytest.mark.parametrize(("key", "kid", "alg"), [(EC_KEY, "ec-1", "ES256"), (RSA_KEY, "rsa-1", "RS256")])
def test_valid_token_sets_payload_and_metadata(key, kid, alg):
    request = make_request(headers=bearer(token(key, kid, alg, groups=["admin"])))
    result = authenticator().authenticate(request)
    assert result.ok and result.provider == "origins"
    assert request.jwt_payload["sub"] == "alice"
    assert request.filter_metadata[JWT_AUTHN_FILTER]["payload"]["groups"] == ["admin"]
    assert request.header("authorization") is not None  # forward: true keeps it


def test_token_from_access_token_query_parameter():
    request = make_request(path=f"/items?access_token={token()}")
    assert authenticator().authenticate(request).ok
    assert request.jwt_payload is not None


@pytest.mark.parametrize(
    ("tok", "reason", "status"),
    [
        (token(STRANGER_KEY), JwtStatus.BAD_SIGNATURE, 401),
        (token(iss=OTHER_ISSUER), JwtStatus.UNKNOWN_ISSUER, 401),
        (token(exp=int(NOW) - 120), JwtStatus.EXPIRED, 401),
        (token(nbf=int(NOW) + 600), JwtStatus.NOT_YET_VALID, 401),
        (token(kid="ec-unknown"), JwtStatus.NO_KEY, 401),
        (token(aud="ratings"), JwtStatus.AUDIENCE, 403),  # Envoy answers a refused audience 403
        ("not-a-jwt", JwtStatus.MALFORMED, 401),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(tok, reason, status):
    request = make_request(headers=bearer(tok))
    result = authenticator().authenticate(request)
    assert not result.ok
    assert (result.reason, result.status, result.body) == (reason, status, reason.value)
    assert request.jwt_payload is None
    challenge = dict(result.headers)["www-authenticate"]
    assert challenge.startswith('Bearer realm="http://reviews.default.svc.cluster.local:9080/"')
    assert 'error="invalid_token"' in challenge


def test_clock_skew_tolerates_a_just_expired_token():
    assert authenticator().authenticate(make_request(headers=bearer(token(exp=int(NOW) - 30)))).ok


def test_second_provider_accepts_its_own_issuer():
    config = istio_config(
        origins=provider(), partners=provider(issuer=OTHER_ISSUER, keys=jwks((STRANGER_KEY, "p-1", "ES256")))
    )
    request = make_request(headers=bearer(token(STRANGER_KEY, "p-1", iss=OTHER_ISSUER)))
    result = authenticator(config).authenticate(request)
    assert result.ok and result.provider == "partners"
    # A partner-issued token signed with the wrong key names the real failure, not the issuer.
    bad = authenticator(config).authenticate(make_request(headers=bearer(token(EC_KEY, "p-1", iss=OTHER_ISSUER))))
    assert bad.reason is JwtStatus.BAD_SIGNATURE


def test_custom_header_location_and_forward_false():
    p = provider(from_headers=[config_pb2.JwtHeader(name="x-jwt", value_prefix="")])
    p.forward = False
    request = make_request(headers=[("x-jwt", token()), ("x-other", "1")])
    assert authenticator(istio_config(origins=p)).authenticate(request).ok
    assert request.header("x-jwt") is None and request.header("x-other") == "1"
    # With an explicit location the default Authorization header is not read.
    assert authenticator(istio_config(origins=p)).authenticate(make_request(headers=bearer("garbage"))).ok


def test_rules_scope_and_strict_requirement():
    strict = config_pb2.JwtAuthentication(
        providers={"origins": provider()},
        rules=[
            config_pb2.RequirementRule(match=rc_pb2.RouteMatch(prefix="/healthz")),
            config_pb2.RequirementRule(
                match=rc_pb2.RouteMatch(prefix="/"), requires=config_pb2.JwtRequirement(provider_name="origins")
            ),
        ],
    )
    auth = authenticator(strict)
    assert auth.authenticate(make_request(path="/healthz")).ok
    missing = auth.authenticate(make_request(path="/api"))
    assert not missing.ok and missing.reason is JwtStatus.MISSING
    assert "invalid_token" not in dict(missing.headers)["www-authenticate"]


def test_remote_jwks_waits_for_the_fetch():
    p = provider()
    p.ClearField("local_jwks")
    p.remote_jwks.http_uri.uri = "https://issuer.example/jwks.json"
    auth = authenticator(istio_config(origins=p))
    assert auth.remote_jwks_uris() == {"origins": "https://issuer.example/jwks.json"}
    assert auth.authenticate(make_request(headers=bearer(token()))).reason is JwtStatus.JWKS_UNAVAILABLE
    auth.set_remote_jwks("origins", jwks((EC_KEY, "ec-1", "ES256")))
    assert auth.authenticate(make_request(headers=bearer(token()))).ok


def test_from_http_filters():
    packed = any_pb2.Any()
    packed.Pack(istio_config(origins=provider()))
    filters = [hcm_pb2.HttpFilter(name=JWT_AUTHN_FILTER, typed_config=packed)]
    auth = Authenticator.from_http_filters(filters, clock=lambda: NOW)
    assert auth is not None
    assert not auth.authenticate(make_request(headers=bearer(token(STRANGER_KEY)))).ok
    assert Authenticator.from_http_filters([], clock=lambda: NOW) is None
