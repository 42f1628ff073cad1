"""Unit tests for mesh.selectors: label and field selectors as the apiserver parses and applies them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.resources.base import label_value_error, qualified_name_error
from mesh.selectors import (
    FieldRequirement,
    FieldSelector,
    LabelSelector,
    Operator,
    Requirement,
    SelectorError,
    label_selector_from_object,
    parse_field_selector,
    parse_label_selector,
)

pytestmark = pytest.mark.unit

# --- label selector syntax ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "requirements", "canonical"),
    [
        ("app=web", [("app", Operator.EQUALS, ("web",))], "app=web"),
        ("app==web", [("app", Operator.EQUALS, ("web",))], "app=web"),
        ("app!=web", [("app", Operator.NOT_EQUALS, ("web",))], "app!=web"),
        ("env in (prod,dev)", [("env", Operator.IN, ("dev", "prod"))], "env in (dev,prod)"),
        ("env notin (prod)", [("env", Operator.NOT_IN, ("prod",))], "env notin (prod)"),
        ("canary", [("canary", Operator.EXISTS, ())], "canary"),
        ("!canary", [("canary", Operator.DOES_NOT_EXIST, ())], "!canary"),
        ("rank>3", [("rank", Operator.GREATER_THAN, ("3",))], "rank>3"),
        ("rank<10", [("rank", Operator.LESS_THAN, ("10",))], "rank<10"),
        ("app=", [("app", Operator.EQUALS, ("",))], "app="),
        ("k in ()", [("k", Operator.IN, ("",))], "k in ()"),
        ("k in (a,,b,a)", [("k", Operator.IN, ("", "a", "b"))], "k in (,a,b)"),
        ("k in (a,)", [("k", Operator.IN, ("", "a"))], "k in (,a)"),
        (
            "app.kubernetes.io/name=istiod",
            [("app.kubernetes.io/name", Operator.EQUALS, ("istiod",))],
            "app.kubernetes.io/name=istiod",
        ),
        ("in=notin", [("in", Operator.EQUALS, ("notin",))], "in=notin"),
        (
            "tier!=db,app=web,!canary",
            [
                ("app", Operator.EQUALS, ("web",)),
                ("canary", Operator.DOES_NOT_EXIST, ()),
                ("tier", Operator.NOT_EQUALS, ("db",)),
            ],
            "app=web,!canary,tier!=db",
        ),
    ],
)
def test_parse_every_operator(text: str, requirements: list[tuple[Any, ...]], canonical: str) -> None:
    selector = parse_label_selector(text)
    assert selector.requirements == tuple(Requirement(*r) for r in requirements)
    assert str(selector) == canonical
    assert parse_label_selector(canonical) == selector


@pytest.mark.parametrize(
    "text",
    [
        " app = web , env in ( prod , dev ) , ! canary , ready ",
        "app==web,env in(prod,dev),!canary,ready",
        "\tapp=web,\nenv  in  (dev,prod),!canary ,ready",
        "ready,!canary,env in (dev, prod),app= web",
    ],
)
def test_whitespace_is_ignored_between_tokens(text: str) -> None:
    assert str(parse_label_selector(text)) == "app=web,!canary,env in (dev,prod),ready"


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_empty_string_selects_everything(text: str) -> None:
    selector = parse_label_selector(text)
    assert selector.empty
    assert selector == LabelSelector()
    assert str(selector) == ""
    assert selector.matches({"any": "thing"}) and selector.matches(None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-app=web", 'unable to parse requirement: key: Invalid value: "-app": name part must consist of'),
        ("a/b/c=1", 'unable to parse requirement: key: Invalid value: "a/b/c": prefix part must be'),
        ("app=web$", 'unable to parse requirement: values[0]: Invalid value: "web$": a valid label must be'),
        ("env in (ok,-bad)", 'unable to parse requirement: values[0]: Invalid value: "-bad"'),
        ("app=" + "x" * 64, "must be no more than 63 characters"),
        ("env in (a,b", "unable to parse requirement: found '', expected: ',', ')' or identifier"),
        ("env in a,b)", "unable to parse requirement: found 'a', expected: '('"),
        ("env in (a b)", "unable to parse requirement: found 'b', expected: ',', ')' or identifier"),
        ("env in", "unable to parse requirement: found '', expected: '('"),
        ("env notin", "unable to parse requirement: found '', expected: '('"),
        ("app=web tier=db", "found 'tier', expected: ',' or 'end of string'"),
        ("app=web)", "found ')', expected: ',' or 'end of string'"),
        ("app=web,", "found '', expected: identifier after ','"),
        (",app=web", "found ',', expected: !, identifier, or 'end of string'"),
        ("app=web,,x", "found ',', expected: identifier after ','"),
        ("=web", "found '=', expected: !, identifier, or 'end of string'"),
        ("app=!web", "unable to parse requirement: found '!', expected: identifier"),
        ("app!web", "unable to parse requirement: found '!', expected: in, notin, =, ==, !=, gt, lt"),
        ("app (web)", "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt"),
        ("!app=web", "found '=', expected: ',' or 'end of string'"),
        ("!", "unable to parse requirement: found '', expected: identifier"),
        ("rank>x", "for 'Gt', 'Lt' operators, the value must be a single integer"),
        ("rank<-1", 'values[0]: Invalid value: "-1"'),  # Gt/Lt values are label values too
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_label_selector(text)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


# --- label matching -------------------------------------------------------------------------------

LABELS = {"app": "web", "env": "prod", "rank": "5", "empty": ""}


@pytest.mark.parametrize(
    ("text", "selected"),
    [
        ("app=web", True),
        ("app=api", False),
        ("missing=x", False),
        ("empty=", True),
        ("missing=", False),  # `=` needs the label, even for the empty value
        ("app!=api", True),
        ("app!=web", False),
        ("missing!=x", True),  # `!=` matches an object without the label
        ("env in (prod,dev)", True),
        ("env in (dev)", False),
        ("missing in (x)", False),
        ("env notin (dev)", True),
        ("env notin (prod)", False),
        ("missing notin (x)", True),  # `notin` matches an object without the label
        ("app", True),
        ("missing", False),
        ("!missing", True),
        ("!app", False),
        ("rank>4", True),
        ("rank>5", False),
        ("rank<6", True),
        ("app>1", False),  # not an integer: never matches
        ("missing<9", False),
        ("app=web,env=prod", True),
        ("app=web,env=dev", False),
    ],
)
def test_matching(text: str, selected: bool) -> None:
    assert parse_label_selector(text).matches(LABELS) is selected


def test_matching_no_labels() -> None:
    assert parse_label_selector("app!=web,!app,x notin (y)").matches(None)
    assert not parse_label_selector("app").matches(None)
    assert not parse_label_selector("app=").matches({})


# --- structured selectors --------------------------------------------------------------------------


def test_from_object_match_labels_and_expressions() -> None:
    selector = label_selector_from_object(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                {"key": "tier", "operator": "NotIn", "values": ["db"]},
                {"key": "ready", "operator": "Exists"},
                {"key": "canary", "operator": "DoesNotExist", "values": []},
            ],
        }
    )
    assert str(selector) == "app=web,!canary,env in (dev,prod),ready,tier notin (db)"
    assert selector == parse_label_selector(str(selector))
    assert selector.matches({"app": "web", "env": "dev", "ready": "", "tier": "front"})
    assert not selector.matches({"app": "web", "env": "dev", "ready": "", "canary": "1"})


@pytest.mark.parametrize("obj", [None, {}, {"matchLabels": {}, "matchExpressions": []}, {"matchLabels": None}])
def test_from_object_empty_selects_everything(obj: Any) -> None:
    selector = label_selector_from_object(obj)
    assert selector.empty
    assert selector.matches({"a": "b"})


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"matchExpressions": [{"key": "env", "operator": "In"}]}, "values set can't be empty"),
        (
            {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": []}]},
            "values set can't be empty",
        ),
        (
            {"matchExpressions": [{"key": "env", "operator": "Exists", "values": ["a"]}]},
            "values set must be empty",
        ),
        (
            {"matchExpressions": [{"key": "env", "operator": "DoesNotExist", "values": ["a"]}]},
            "values set must be empty",
        ),
        (
            {"matchExpressions": [{"key": "env", "operator": "Gt", "values": ["1"]}]},
            '"Gt" is not a valid label selector operator',
        ),
        (
            {"matchExpressions": [{"key": "-env", "operator": "Exists"}]},
            'matchExpressions[0].key: Invalid value: "-env"',
        ),
        (
            {"matchExpressions": [{"key": "env", "operator": "In", "values": ["a b"]}]},
            'matchExpressions[0].values[0]: Invalid value: "a b"',
        ),
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": "a"}]}, "values a list of strings"),
        ({"matchExpressions": ["env"]}, "matchExpressions[0]: Invalid value: must be an object"),
        ({"matchLabels": {"app": "we b"}}, 'matchLabels.values[0]: Invalid value: "we b"'),
        ({"matchLabels": {"a/b/c": "x"}}, 'matchLabels.key: Invalid value: "a/b/c"'),
        ({"matchLabels": {"app": 1}}, "must be a string"),
        ({"matchLabels": ["app"]}, "matchLabels must be an object"),
        ("app=web", "must be an object"),
    ],
)
def test_from_object_errors(obj: Any, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        label_selector_from_object(obj)
    assert message in str(info.value)


# --- field selectors ------------------------------------------------------------------------------

POD_FIELDS = ("spec.nodeName", "status.phase", "spec.serviceAccountName", "status.podIP")


def _pod(name: str = "web", node: str | None = "n1", phase: str = "Running") -> dict[str, Any]:
    spec = {"nodeName": node} if node is not None else {}
    return {"metadata": {"name": name, "namespace": "demo"}, "spec": spec, "status": {"phase": phase}}


def test_field_selector_kubectl_delete_wait() -> None:
    # kubectl delete waits with `fieldSelector=metadata.name=x` (docs/kubectl-compat §5).
    selector = parse_field_selector("metadata.name=web", POD_FIELDS)
    assert selector.exact("metadata.name") == "web"
    assert selector.matches(_pod("web"))
    assert not selector.matches(_pod("api"))


@pytest.mark.parametrize(
    ("text", "pod", "selected"),
    [
        ("spec.nodeName=n1", _pod(), True),
        ("spec.nodeName==n1", _pod(), True),
        ("spec.nodeName!=n1", _pod(), False),
        ("spec.nodeName=n2", _pod(), False),
        ("spec.nodeName=", _pod(node=None), True),  # unscheduled pods: a missing field reads as ""
        ("spec.nodeName!=", _pod(node=None), False),
        ("spec.nodeName!=n1", _pod(node=None), True),
        ("status.phase=Running,metadata.namespace=demo", _pod(), True),
        ("status.phase!=Running,metadata.namespace=demo", _pod(), False),
        ("status.podIP=", _pod(), True),
        ("", _pod(), True),
    ],
)
def test_field_selector_matching(text: str, pod: dict[str, Any], selected: bool) -> None:
    assert parse_field_selector(text, POD_FIELDS).matches(pod) is selected


def test_field_selector_exact() -> None:
    selector = parse_field_selector("spec.nodeName!=n2,metadata.name==web,spec.nodeName=n1", POD_FIELDS)
    assert selector.exact("metadata.name") == "web"
    assert selector.exact("spec.nodeName") == "n1"
    assert selector.exact("status.phase") is None
    assert parse_field_selector("spec.nodeName!=n2", POD_FIELDS).exact("spec.nodeName") is None


def test_field_selector_non_string_fields() -> None:
    node = {
        "metadata": {"name": "n1"},
        "spec": {"unschedulable": True},
        "status": {"capacity": {"pods": 110}},
    }
    assert parse_field_selector("spec.unschedulable=true", ["spec.unschedulable"]).matches(node)
    assert parse_field_selector("status.capacity.pods=110", ["status.capacity.pods"]).matches(node)
    assert parse_field_selector("spec.unschedulable=", ["spec.unschedulable"]).matches({"spec": "odd"})


def test_field_selector_empty_and_canonical_form() -> None:
    assert parse_field_selector("", []).empty
    assert parse_field_selector("", []) == FieldSelector()
    selector = parse_field_selector("status.phase!=Failed,metadata.name==a\\,b\\=c\\\\", ["status.phase"])
    assert selector.requirements == (
        FieldRequirement("metadata.name", "a,b=c\\"),
        FieldRequirement("status.phase", "Failed", negated=True),
    )
    assert str(selector) == "metadata.name=a\\,b\\=c\\\\,status.phase!=Failed"
    assert parse_field_selector(str(selector), ["status.phase"]) == selector


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo=bar", "field label not supported: foo"),
        ("spec.nodeName=n1,spec.hostname=h", "field label not supported: spec.hostname"),
        ("metadata.name = web", "field label not supported: metadata.name "),  # nothing is trimmed
        ("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
        ("metadata.name=a=b", "invalid field selector: unescaped character in value: ="),
        ("metadata.name=a\\x", "invalid field selector: invalid escape sequence: \\x"),
        ("metadata.name=a\\", "invalid field selector: invalid escape sequence: \\"),
    ],
)
def test_field_selector_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_field_selector(text, POD_FIELDS)
    assert str(info.value) == message


def test_metadata_fields_always_supported() -> None:
    selector = parse_field_selector("metadata.name=a,metadata.namespace=b", [])
    assert selector.matches({"metadata": {"name": "a", "namespace": "b"}})


# --- round trips ----------------------------------------------------------------------------------

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?"
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,10}[A-Za-z0-9])?"
_KEYS = st.from_regex(rf"(({_DNS_LABEL}\.)?{_DNS_LABEL}/)?{_NAME}", fullmatch=True).filter(
    lambda k: qualified_name_error(k) is None
)
_VALUES = st.from_regex(rf"({_NAME})?", fullmatch=True).filter(lambda v: label_value_error(v) is None)


@st.composite
def _requirements(draw: st.DrawFn) -> Requirement:
    key = draw(_KEYS)
    operator = draw(st.sampled_from(list(Operator)))
    if operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
        values: tuple[str, ...] = ()
    elif operator in (Operator.IN, Operator.NOT_IN):
        values = tuple(sorted(draw(st.sets(_VALUES, min_size=1, max_size=3))))
    elif operator in (Operator.GREATER_THAN, Operator.LESS_THAN):
        values = (str(draw(st.integers(0, 1000))),)  # "-1" is not a label value
    else:
        values = (draw(_VALUES),)
    return Requirement(key, operator, values)


def _spaced(draw: st.DrawFn, text: str) -> str:
    # Sprinkle whitespace around the separators, where the lexer must skip it.
    spaces = st.sampled_from(["", " ", "  ", "\t"])
    for symbol in (",", "(", ")", "!=", " in ", " notin "):
        text = text.replace(symbol, draw(spaces) + symbol + draw(spaces))
    return text


@given(st.lists(_requirements(), max_size=4), st.data())
def test_label_selector_round_trip(requirements: list[Requirement], data: st.DataObject) -> None:
    text = ",".join(str(r) for r in requirements)
    parsed = parse_label_selector(_spaced(data.draw, text))
    assert parsed == LabelSelector(tuple(sorted(requirements)))
    assert parse_label_selector(str(parsed)) == parsed
    labels = data.draw(st.dictionaries(st.sampled_from([r.key for r in requirements] or ["k"]), _VALUES))
    assert parse_label_selector(str(parsed)).matches(labels) == all(r.matches(labels) for r in requirements)


@given(st.lists(st.tuples(st.sampled_from(POD_FIELDS), st.text(max_size=6), st.booleans()), max_size=4))
def test_field_selector_round_trip(terms: list[tuple[str, str, bool]]) -> None:
    selector = FieldSelector(tuple(sorted(FieldRequirement(f, v, n) for f, v, n in terms)))
    assert parse_field_selector(str(selector), POD_FIELDS) == selector
