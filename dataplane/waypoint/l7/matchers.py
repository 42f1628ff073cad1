"""Envoy's matcher messages compiled once into predicates: StringMatcher, HeaderMatcher,
QueryParameterMatcher, ValueMatcher / MetadataMatcher, CidrRange and FractionalPercent sampling.

Shared by rbac.py, routing.py, jwt.py and fault.py, so that one rule (for instance how an absent
header meets `invert_match`) is written once. Regexes are RE2 in Envoy and run here with Python's
`re` (`fullmatch`, as Envoy requires the whole value to match); the RE2 syntax Istio and the
Gateway API emit is a subset Python reads the same way.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from envoy.config.core.v3 import address_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.type.matcher.v3 import metadata_pb2, regex_pb2, string_pb2, value_pb2
from envoy.type.v3 import percent_pb2

from .model import ConfigError, Request

StringPredicate = Callable[[str], bool]
RequestPredicate = Callable[[Request], bool]


def compile_regex(matcher: regex_pb2.RegexMatcher) -> re.Pattern[str]:
    """A RegexMatcher's pattern (the google_re2 engine is the only one Envoy has)."""
    try:
        return re.compile(matcher.regex)
    except re.error as e:
        raise ConfigError(f"invalid regex {matcher.regex!r}: {e}") from None


def string_matcher(m: string_pb2.StringMatcher) -> StringPredicate:
    """A StringMatcher as a predicate; `ignore_case` applies to exact/prefix/suffix/contains,
    never to safe_regex (Envoy's documented rule)."""
    kind = m.WhichOneof("match_pattern")
    if kind == "safe_regex":
        pattern = compile_regex(m.safe_regex)
        return lambda value: pattern.fullmatch(value) is not None
    if kind not in ("exact", "prefix", "suffix", "contains"):
        raise ConfigError(f"StringMatcher {kind or 'without a pattern'} is not supported")
    expected: str = getattr(m, kind)
    fold = m.ignore_case
    if fold:
        expected = expected.lower()

    def norm(value: str) -> str:
        return value.lower() if fold else value

    if kind == "exact":
        return lambda value: norm(value) == expected
    if kind == "prefix":
        return lambda value: norm(value).startswith(expected)
    if kind == "suffix":
        return lambda value: norm(value).endswith(expected)
    return lambda value: expected in norm(value)


def _header_value_matcher(m: route_components_pb2.HeaderMatcher) -> StringPredicate | None:
    """The value test of a HeaderMatcher; None for a presence test."""
    kind = m.WhichOneof("header_match_specifier")
    if kind is None or kind == "present_match":
        return None
    if kind == "string_match":
        return string_matcher(m.string_match)
    if kind == "safe_regex_match":
        pattern = compile_regex(m.safe_regex_match)
        return lambda value: pattern.fullmatch(value) is not None
    if kind == "range_match":
        start, end = m.range_match.start, m.range_match.end

        def in_range(value: str) -> bool:
            try:
                number = int(value)
            except ValueError:
                return False
            return start <= number < end  # Int64Range: start inclusive, end exclusive

        return in_range
    # The deprecated exact_match / prefix_match / suffix_match / contains_match fields.
    legacy = {"exact_match": "exact", "prefix_match": "prefix", "suffix_match": "suffix", "contains_match": "contains"}
    if kind in legacy:
        return string_matcher(string_pb2.StringMatcher(**{legacy[kind]: getattr(m, kind)}))
    raise ConfigError(f"HeaderMatcher {m.name}: {kind} is not supported")


def header_matcher(
    m: route_components_pb2.HeaderMatcher, lookup: Callable[[Any, str], str | None] | None = None
) -> Callable[[Any], bool]:
    """A HeaderMatcher over anything `lookup(subject, name)` reads headers from (default: a
    Request's joined values, pseudo-headers included).

    Envoy (`HeaderUtility::matchHeaders`): with no specifier it is a presence test; an absent
    header (unless `treat_missing_header_as_empty`) matches only `present_match: false`, or
    `present_match: true` inverted — an inverted value matcher does not match an absent header.
    """
    name = m.name.lower()
    read = lookup or (lambda request, header: request.header_joined(header))
    value_test = _header_value_matcher(m)
    present_wanted = m.present_match if m.WhichOneof("header_match_specifier") == "present_match" else True
    invert = m.invert_match

    def matches(subject: Any) -> bool:
        value = read(subject, name)
        if value is None and m.treat_missing_header_as_empty:
            value = ""
        if value is None:
            return (not present_wanted) != invert if value_test is None else False
        result = present_wanted if value_test is None else value_test(value)
        return result != invert

    return matches


def query_parameter_matcher(m: route_components_pb2.QueryParameterMatcher) -> RequestPredicate:
    """A QueryParameterMatcher: an absent parameter never matches; with neither `string_match`
    nor `present_match` it is a presence test (Envoy's default)."""
    name = m.name
    value_test = string_matcher(m.string_match) if m.HasField("string_match") else None

    def matches(request: Request) -> bool:
        value = query_parameters(request.path).get(name)
        if value is None:
            return False
        return True if value_test is None else value_test(value)

    return matches


def query_parameters(path: str) -> dict[str, str]:
    """The decoded query parameters of a path; the first value wins for a repeated name."""
    if "?" not in path:
        return {}
    found: dict[str, str] = {}
    for key, value in parse_qsl(path.split("?", 1)[1], keep_blank_values=True):
        found.setdefault(key, value)
    return found


def value_matcher(m: value_pb2.ValueMatcher) -> Callable[[Any], bool]:
    """A ValueMatcher over a JSON-like value (what dynamic metadata holds). `list_match` matches a
    list holding an element that matches `one_of` (how a `groups` claim is tested)."""
    kind = m.WhichOneof("match_pattern")
    if kind == "null_match":
        return lambda value: value is None
    if kind == "present_match":
        want = m.present_match
        return lambda value: (value is not None) == want
    if kind == "bool_match":
        want_bool = m.bool_match
        return lambda value: isinstance(value, bool) and value == want_bool
    if kind == "string_match":
        test = string_matcher(m.string_match)
        return lambda value: isinstance(value, str) and test(value)
    if kind == "double_match":
        return _double_matcher(m.double_match)
    if kind == "list_match":
        element = value_matcher(m.list_match.one_of)
        return lambda value: isinstance(value, list) and any(element(item) for item in value)
    if kind == "or_match":
        options = [value_matcher(v) for v in m.or_match.value_matchers]
        return lambda value: any(option(value) for option in options)
    raise ConfigError(f"ValueMatcher {kind or 'without a pattern'} is not supported")


def _double_matcher(m: Any) -> Callable[[Any], bool]:
    if m.WhichOneof("match_pattern") == "exact":
        exact = m.exact
        return lambda value: _is_number(value) and float(value) == exact
    start, end = m.range.start, m.range.end
    return lambda value: _is_number(value) and start <= float(value) < end


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def metadata_matcher(m: metadata_pb2.MetadataMatcher) -> RequestPredicate:
    """A MetadataMatcher over the request's dynamic metadata: the value at `path` under `filter`
    (a missing key is a missing value, which only `present_match: false` / `null_match` accept)."""
    keys = [segment.key for segment in m.path]
    test = value_matcher(m.value)
    filter_name, invert = m.filter, m.invert

    def matches(request: Request) -> bool:
        value: Any = request.dynamic_metadata(filter_name)
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        return test(value) != invert

    return matches


def cidr_matcher(cidr: address_pb2.CidrRange) -> Callable[[str | None], bool]:
    """A CidrRange as a predicate over an IP address string (None never matches); an unset
    `prefix_len` is 0, as Envoy documents."""
    try:
        network = ipaddress.ip_network(f"{cidr.address_prefix}/{cidr.prefix_len.value}", strict=False)
    except ValueError as e:
        raise ConfigError(f"invalid CIDR {cidr.address_prefix}/{cidr.prefix_len.value}: {e}") from None

    def matches(address: str | None) -> bool:
        if address is None:
            return False
        try:
            return ipaddress.ip_address(address) in network
        except ValueError:
            return False

    return matches


_DENOMINATORS = {
    percent_pb2.FractionalPercent.HUNDRED: 100,
    percent_pb2.FractionalPercent.TEN_THOUSAND: 10_000,
    percent_pb2.FractionalPercent.MILLION: 1_000_000,
}


def fraction(percent: percent_pb2.FractionalPercent) -> float:
    """A FractionalPercent as a fraction in [0, 1] (a numerator above the denominator is 1)."""
    return min(1.0, percent.numerator / _DENOMINATORS[percent.denominator])


def sampled(percent: percent_pb2.FractionalPercent, rng: random.Random) -> bool:
    """Whether this request falls in the FractionalPercent: Envoy draws a number in
    [0, denominator) and compares it with the numerator."""
    return rng.randrange(_DENOMINATORS[percent.denominator]) < percent.numerator


def all_of(predicates: Sequence[Callable[[Any], bool]]) -> Callable[[Any], bool]:
    """A conjunction (true for an empty list)."""
    return lambda subject: all(p(subject) for p in predicates)


def any_of(predicates: Sequence[Callable[[Any], bool]]) -> Callable[[Any], bool]:
    """A disjunction (false for an empty list)."""
    return lambda subject: any(p(subject) for p in predicates)
