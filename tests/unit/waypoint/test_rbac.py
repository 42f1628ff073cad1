"""Unit tests for dataplane.waypoint.l7.rbac: Envoy RBAC filters over requests."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import address_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import metadata_pb2, path_pb2, regex_pb2, string_pb2, value_pb2
from google.protobuf import any_pb2, wrappers_pb2

from dataplane.waypoint.l7.model import JWT_AUTHN_FILTER, ConfigError
from dataplane.waypoint.l7.rbac import Action, RbacEngine

from .l7_requests import NOTSLEEP, SLEEP, make_request

pytestmark = pytest.mark.unit

# --- builders ----------------------------------------------------------------------------------------


def method(name: str) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(
        header=rc_pb2.HeaderMatcher(name=":method", string_match=string_pb2.StringMatcher(exact=name))
    )


def principal(name: str, kind: str = "exact") -> rbac_pb2.Principal:
    return rbac_pb2.Principal(
        authenticated=rbac_pb2.Principal.Authenticated(principal_name=string_pb2.StringMatcher(**{kind: name}))
    )


def claim(path: list[str], value: value_pb2.ValueMatcher) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(
        metadata=metadata_pb2.MetadataMatcher(
            filter=JWT_AUTHN_FILTER,
            path=[metadata_pb2.MetadataMatcher.PathSegment(key=k) for k in ["payload", *path]],
            value=value,
        )
    )


def exact_value(text: str) -> value_pb2.ValueMatcher:
    return value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(exact=text))


def url_path(**kind: str) -> path_pb2.PathMatcher:
    return path_pb2.PathMatcher(path=string_pb2.StringMatcher(**kind))


ANY_PERMISSION = rbac_pb2.Permission(any=True)
ANY_PRINCIPAL = rbac_pb2.Principal(any=True)


def rbac(action: int, **policies: rbac_pb2.Policy) -> http_rbac_pb2.RBAC:
    return http_rbac_pb2.RBAC(rules=rbac_pb2.RBAC(action=action, policies=policies))


def policy(permissions: list[rbac_pb2.Permission], principals: list[rbac_pb2.Principal]) -> rbac_pb2.Policy:
    return rbac_pb2.Policy(permissions=permissions, principals=principals)


GET_FOR_SLEEP = rbac(rbac_pb2.RBAC.ALLOW, **{"default.allow-get": policy([method("GET")], [principal(SLEEP)])})


# --- filter semantics ----------------------------------------------------------------------------


def test_no_filter_allows():
    assert RbacEngine([]).evaluate(make_request()).allowed


def test_filter_without_rules_enforces_nothing():
    assert RbacEngine([http_rbac_pb2.RBAC()]).evaluate(make_request("DELETE")).allowed


def test_allow_with_no_policies_denies_everything():
    decision = RbacEngine([rbac(rbac_pb2.RBAC.ALLOW)]).evaluate(make_request())
    assert not decision.allowed
    assert decision.policy is None
    assert decision.log_reason == "rbac_access_denied_matched_policy[none]"


def test_get_only_allow_for_sleep():
    engine = RbacEngine([GET_FOR_SLEEP])
    allowed = engine.evaluate(make_request("GET"))
    assert allowed.allowed and allowed.policy == "default.allow-get" and allowed.action is Action.ALLOW
    assert not engine.evaluate(make_request("DELETE")).allowed
    assert not engine.evaluate(make_request("GET", principal=NOTSLEEP)).allowed
    assert not engine.evaluate(make_request("GET", principal=None)).allowed  # plaintext peer


def test_deny_beats_allow():
    deny_delete = rbac(rbac_pb2.RBAC.DENY, **{"default.no-delete": policy([method("DELETE")], [ANY_PRINCIPAL])})
    allow_all = rbac(rbac_pb2.RBAC.ALLOW, **{"default.allow-all": policy([ANY_PERMISSION], [ANY_PRINCIPAL])})
    engine = RbacEngine([deny_delete, allow_all])
    denied = engine.evaluate(make_request("DELETE"))
    assert not denied.allowed
    assert (denied.action, denied.policy, denied.filter_index) == (Action.DENY, "default.no-delete", 0)
    assert denied.log_reason == "rbac_access_denied_matched_policy[default.no-delete]"
    allowed = engine.evaluate(make_request("GET"))
    assert allowed.allowed and allowed.policy == "default.allow-all" and allowed.filter_index == 1


def test_log_action_allows_and_names_the_match():
    log = rbac(rbac_pb2.RBAC.LOG, **{"audit": policy([method("DELETE")], [ANY_PRINCIPAL])})
    decision = RbacEngine([log]).evaluate(make_request("DELETE"))
    assert decision.allowed and decision.action is Action.LOG and decision.policy == "audit"


def test_policies_are_tried_in_name_order():
    deny = rbac(
        rbac_pb2.RBAC.DENY,
        **{"b-second": policy([ANY_PERMISSION], [ANY_PRINCIPAL]), "a-first": policy([ANY_PERMISSION], [ANY_PRINCIPAL])},
    )
    assert RbacEngine([deny]).evaluate(make_request()).policy == "a-first"


def test_shadow_rules_are_reported_not_enforced():
    config = http_rbac_pb2.RBAC(
        shadow_rules=rbac_pb2.RBAC(
            action=rbac_pb2.RBAC.DENY, policies={"dry.deny-get": policy([method("GET")], [ANY_PRINCIPAL])}
        )
    )
    decision = RbacEngine([config]).evaluate(make_request("GET"))
    assert decision.allowed
    assert len(decision.shadow) == 1
    assert not decision.shadow[0].allowed and decision.shadow[0].policy == "dry.deny-get"


def test_from_http_filters_unpacks_rbac_in_order():
    packed = any_pb2.Any()
    packed.Pack(GET_FOR_SLEEP)
    router = hcm_pb2.HttpFilter(name="envoy.filters.http.router")
    engine = RbacEngine.from_http_filters(
        [hcm_pb2.HttpFilter(name="envoy.filters.http.rbac", typed_config=packed), router]
    )
    assert len(engine.filters) == 1
    assert not engine.evaluate(make_request("DELETE")).allowed


# --- principals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("matcher", "source", "expected"),
    [
        (principal("spiffe://cluster.local/ns/default/", "prefix"), SLEEP, True),
        (principal("/sa/sleep", "suffix"), SLEEP, True),
        (principal("/ns/default/", "contains"), NOTSLEEP, False),
        (
            rbac_pb2.Principal(
                authenticated=rbac_pb2.Principal.Authenticated(
                    principal_name=string_pb2.StringMatcher(
                        safe_regex=regex_pb2.RegexMatcher(regex="spiffe://[^/]+/ns/default/sa/.*")
                    )
                )
            ),
            SLEEP,
            True,
        ),
        (rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated()), NOTSLEEP, True),
        (rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated()), None, False),
        (rbac_pb2.Principal(not_id=principal(SLEEP)), NOTSLEEP, True),
        (rbac_pb2.Principal(not_id=principal(SLEEP)), SLEEP, False),
        (rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=[principal(NOTSLEEP), principal(SLEEP)])), SLEEP, True),
        (rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=[principal(NOTSLEEP), principal(SLEEP)])), SLEEP, False),
    ],
)
def test_principal_matchers(matcher, source, expected):
    engine = RbacEngine([rbac(rbac_pb2.RBAC.ALLOW, p=policy([ANY_PERMISSION], [matcher]))])
    assert engine.evaluate(make_request(principal=source)).allowed is expected


def test_remote_ip_cidr():
    cidr = address_pb2.CidrRange(address_prefix="198.18.1.0", prefix_len=wrappers_pb2.UInt32Value(value=24))
    for field in ("direct_remote_ip", "remote_ip"):
        engine = RbacEngine(
            [rbac(rbac_pb2.RBAC.ALLOW, p=policy([ANY_PERMISSION], [rbac_pb2.Principal(**{field: cidr})]))]
        )
        assert engine.evaluate(make_request(source_ip="198.18.1.77")).allowed
        assert not engine.evaluate(make_request(source_ip="198.18.2.1")).allowed


def test_request_principal_claims_and_groups_list():
    iss_sub = rbac_pb2.Principal(
        and_ids=rbac_pb2.Principal.Set(
            ids=[claim(["iss"], exact_value("https://issuer.example")), claim(["sub"], exact_value("alice"))]
        )
    )
    admin = claim(["groups"], value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=exact_value("admin"))))
    engine = RbacEngine(
        [
            rbac(
                rbac_pb2.RBAC.ALLOW,
                p=policy([ANY_PERMISSION], [rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=[iss_sub, admin]))]),
            )
        ]
    )
    payload = {"iss": "https://issuer.example", "sub": "alice", "groups": ["dev", "admin"]}
    assert engine.evaluate(make_request(jwt_payload=payload)).allowed
    assert not engine.evaluate(make_request(jwt_payload={**payload, "groups": ["dev"]})).allowed
    assert not engine.evaluate(make_request(jwt_payload={**payload, "groups": "admin"})).allowed  # not a list
    assert not engine.evaluate(make_request()).allowed  # no token, no claims


def test_metadata_reads_the_filter_metadata_jwt_authn_wrote():
    engine = RbacEngine([rbac(rbac_pb2.RBAC.ALLOW, p=policy([ANY_PERMISSION], [claim(["sub"], exact_value("bob"))]))])
    request = make_request(filter_metadata={JWT_AUTHN_FILTER: {"payload": {"sub": "bob"}}})
    assert engine.evaluate(request).allowed


def test_header_and_url_path_principals():
    by_header = rbac_pb2.Principal(
        header=rc_pb2.HeaderMatcher(name="x-user", string_match=string_pb2.StringMatcher(prefix="adm"))
    )
    by_path = rbac_pb2.Principal(url_path=url_path(prefix="/public/"))
    engine = RbacEngine([rbac(rbac_pb2.RBAC.ALLOW, p=policy([ANY_PERMISSION], [by_header, by_path]))])
    assert engine.evaluate(make_request(headers=[("x-user", "admin")])).allowed
    assert engine.evaluate(make_request(path="/public/a?x=1")).allowed
    assert not engine.evaluate(make_request(path="/private")).allowed


# --- permissions ---------------------------------------------------------------------------------


def allow_if(permission: rbac_pb2.Permission) -> RbacEngine:
    return RbacEngine([rbac(rbac_pb2.RBAC.ALLOW, p=policy([permission], [ANY_PRINCIPAL]))])


def test_url_path_ignores_the_query_string():
    engine = allow_if(rbac_pb2.Permission(url_path=url_path(exact="/api/items")))
    assert engine.evaluate(make_request(path="/api/items?page=2")).allowed
    assert not engine.evaluate(make_request(path="/api/items/1")).allowed


def test_authority_and_other_headers():
    host = rbac_pb2.Permission(
        header=rc_pb2.HeaderMatcher(name=":authority", string_match=string_pb2.StringMatcher(prefix="reviews."))
    )
    assert allow_if(host).evaluate(make_request()).allowed
    assert not allow_if(host).evaluate(make_request(authority="ratings:9080")).allowed
    version = rbac_pb2.Permission(
        header=rc_pb2.HeaderMatcher(name="x-version", string_match=string_pb2.StringMatcher(exact="v2"))
    )
    assert allow_if(version).evaluate(make_request(headers=[("x-version", "v2")])).allowed
    assert not allow_if(version).evaluate(make_request()).allowed  # absent header never matches


def test_destination_port_and_combinators():
    port = rbac_pb2.Permission(destination_port=9080)
    get_on_port = rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=[port, method("GET")]))
    assert allow_if(get_on_port).evaluate(make_request("GET")).allowed
    assert not allow_if(get_on_port).evaluate(make_request("GET", port=8080)).allowed
    either = rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=[method("PUT"), method("POST")]))
    assert allow_if(either).evaluate(make_request("POST")).allowed
    assert not allow_if(either).evaluate(make_request("GET")).allowed
    not_get = rbac_pb2.Permission(not_rule=method("GET"))
    assert allow_if(not_get).evaluate(make_request("HEAD")).allowed
    assert not allow_if(not_get).evaluate(make_request("GET")).allowed


def test_inverted_and_presence_header_matchers():
    present = rbac_pb2.Permission(header=rc_pb2.HeaderMatcher(name="x-debug", present_match=True))
    absent = rbac_pb2.Permission(header=rc_pb2.HeaderMatcher(name="x-debug", present_match=False))
    inverted = rbac_pb2.Permission(
        header=rc_pb2.HeaderMatcher(
            name="x-env", string_match=string_pb2.StringMatcher(exact="prod"), invert_match=True
        )
    )
    assert allow_if(present).evaluate(make_request(headers=[("x-debug", "1")])).allowed
    assert not allow_if(present).evaluate(make_request()).allowed
    assert allow_if(absent).evaluate(make_request()).allowed
    assert allow_if(inverted).evaluate(make_request(headers=[("x-env", "dev")])).allowed
    assert not allow_if(inverted).evaluate(make_request(headers=[("x-env", "prod")])).allowed
    assert not allow_if(inverted).evaluate(make_request()).allowed  # Envoy: inverted value test, absent header


def test_unsupported_fields_are_refused():
    with pytest.raises(ConfigError):
        RbacEngine([rbac(rbac_pb2.RBAC.ALLOW, p=policy([rbac_pb2.Permission()], [ANY_PRINCIPAL]))])
    custom = rbac_pb2.Policy(permissions=[ANY_PERMISSION], principals=[ANY_PRINCIPAL])
    custom.condition.const_expr.bool_value = True
    with pytest.raises(ConfigError, match="CEL"):
        RbacEngine([rbac(rbac_pb2.RBAC.ALLOW, p=custom)])
