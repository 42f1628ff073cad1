"""TokenRequest parsing and who may have which service-account token (pure parts)."""

from __future__ import annotations

import pytest

from services.istiod.auth import ADMIN, NODE_ROLE, READER, Principal
from services.istiod.errors import ApiError
from services.istiod.sa_tokens import TokenSpec, check_binding, parse_token_request

pytestmark = pytest.mark.unit

ADMIN_P = Principal("admin", ADMIN)
NODE_1 = Principal("system:node:node-1", NODE_ROLE)
READER_P = Principal("reader", READER)
POD = {"metadata": {"name": "web-0", "uid": "u-1"}, "spec": {"nodeName": "node-1", "serviceAccountName": "web-api"}}
BOUND = TokenSpec(("istio-ca",), 3600, "web-0", "u-1")


def ref(**fields: object) -> dict:
    return {"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web-0", **fields}}}


def test_defaults_and_clamping() -> None:
    assert parse_token_request(None) == TokenSpec(("istio-ca",), 3600)
    assert parse_token_request({"spec": {"expirationSeconds": 5}}).expiration_seconds == 600
    assert parse_token_request({"spec": {"expirationSeconds": 10**7}}).expiration_seconds == 86400
    assert parse_token_request({"spec": {"audiences": ["a", "b"]}}).audiences == ("a", "b")
    assert parse_token_request(ref(uid="u-1")) == BOUND


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"kind": "Pod"},
        {"spec": {"expirationSeconds": "1h"}},
        {"spec": {"audiences": [""]}},
        {"spec": {"audience": ["x"]}},
        {"spec": {"boundObjectRef": {"kind": "Secret", "name": "s"}}},
        {"spec": {"boundObjectRef": {"kind": "Pod"}}},
    ],
)
def test_bad_requests_are_400(body: object) -> None:
    with pytest.raises(ApiError) as err:
        parse_token_request(body)
    assert err.value.code == 400


@pytest.mark.parametrize(
    ("principal", "sa", "spec", "pod", "code"),
    [
        (ADMIN_P, "web-api", BOUND, POD, None),
        (ADMIN_P, "web-api", TokenSpec(("x",), 600), None, None),
        (ADMIN_P, "web-api", BOUND, None, 404),
        (ADMIN_P, "billing", BOUND, POD, 400),
        (ADMIN_P, "web-api", TokenSpec(("x",), 600, "web-0", "u-2"), POD, 409),
        (NODE_1, "web-api", BOUND, POD, None),
        (NODE_1, "web-api", TokenSpec(("x",), 600), None, 403),
        (NODE_1, "web-api", TokenSpec(("x",), 600, "web-0"), POD, 403),
        (NODE_1, "web-api", BOUND, None, 403),
        (NODE_1, "billing", BOUND, POD, 403),
        (NODE_1, "web-api", TokenSpec(("x",), 600, "web-0", "u-2"), POD, 403),
        (Principal("system:node:node-2", NODE_ROLE), "web-api", BOUND, POD, 403),
        (READER_P, "web-api", BOUND, POD, 403),
    ],
)
def test_who_may_have_the_token(
    principal: Principal, sa: str, spec: TokenSpec, pod: dict | None, code: int | None
) -> None:
    if code is None:
        check_binding(principal, "shop", sa, spec, pod)
        return
    with pytest.raises(ApiError) as err:
        check_binding(principal, "shop", sa, spec, pod)
    assert err.value.code == code
