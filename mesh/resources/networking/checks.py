"""Rules shared by the networking kinds, following the checks of Istio's validation webhook
(istio/istio `pkg/config/validation`). Each helper takes the field path of the value it
checks and returns causes carrying that exact path, so callers only compose paths.

Istio's syntax rules differ from Kubernetes' in places and are reproduced as Istio has them:
its DNS-1123 labels accept upper-case letters, hosts may carry a leading wildcard label, and
regular expressions are RE2 (no look-around, no back-references).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Sequence
from typing import Protocol

from ..base import Cause, forbidden, invalid
from .common import Destination, Headers, Percent, StringMatch, duration_nanos

# --- names ---------------------------------------------------------------------------------------

_LABEL = r"[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?"
_DNS_LABEL = re.compile(f"^{_LABEL}$")
# "*", "*foo", "*-foo" or a plain label: the forms Istio allows as the first label of a host.
_WILDCARD_LABEL = re.compile(rf"^(\*|(\*|\*-)?{_LABEL})$")


def dns_label_ok(value: str) -> bool:
    """Istio's IsDNS1123Label: up to 63 letters (either case), digits and inner dashes."""
    return len(value) <= 63 and bool(_DNS_LABEL.match(value))


def required_because(path: str, why: str) -> Cause:
    """A `FieldValueRequired` cause with a detail, as `field.Required(path, detail)` words it."""
    return Cause(path, "FieldValueRequired", f"Required value: {why}")


def _labels_error(domain: str) -> str | None:
    parts = domain.split(".")
    if parts[-1].isdigit():
        return f"top level domain {parts[-1]!r} cannot be all-numeric"
    for i, label in enumerate(parts):
        # A trailing dot ("istio.io.") is an unambiguous absolute name.
        if i == len(parts) - 1 and label == "":
            return None
        if not dns_label_ok(label):
            return f"label {label!r} is not a valid DNS label"
    return None


def _length_error(domain: str) -> str | None:
    if len(domain) > 255:
        return "domain name too long (max 255)"
    if not domain:
        return "empty domain name not allowed"
    return None


def fqdn_error(domain: str) -> str | None:
    """Why `domain` is not a fully qualified name without wildcards (None when it is one)."""
    return _length_error(domain) or _labels_error(domain)


def wildcard_domain_error(domain: str) -> str | None:
    """Why `domain` is not a DNS name with an optional wildcard first label (None when it is)."""
    problem = _length_error(domain)
    if problem:
        return problem
    first, _, rest = domain.partition(".")
    if not (len(first) <= 63 and _WILDCARD_LABEL.match(first)):
        return f"label {first!r} is not a valid DNS label or wildcard"
    return _labels_error(rest) if rest else None


def is_ip(value: str) -> bool:
    """True for an IPv4 or IPv6 address (no prefix length)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def ip_subnet_error(value: str) -> str | None:
    """Why `value` is neither an IP address nor a CIDR block (None when it is one)."""
    try:
        if value.count("/") == 1:
            # Like Go's netip.ParsePrefix, host bits may be set ("10.0.0.1/24").
            ipaddress.ip_network(value, strict=False)
        else:
            ipaddress.ip_address(value)
    except ValueError:
        return "must be an IP address or a CIDR block"
    return None


def port_error(number: int) -> str | None:
    """Why `number` is not a usable port (None when it is one)."""
    return None if 1 <= number <= 65535 else "port number must be in the range 1..65535"


# --- durations and percentages -------------------------------------------------------------------


def check_duration(path: str, value: str | None) -> list[Cause]:
    """Istio's ValidateDuration: at least 1ms and a whole number of milliseconds."""
    if value is None:
        return []
    nanos = duration_nanos(value)
    if nanos is None:
        return []  # the schema already refused it
    if nanos < 1_000_000:
        return [invalid(path, value, "duration must be greater than 1ms")]
    if nanos % 1_000_000:
        return [invalid(path, value, "only durations to ms precision are supported")]
    return []


def check_percentage(path: str, percent: Percent | None) -> list[Cause]:
    """A fractional percentage is 0, or between 0.0001 and 100 (Envoy's resolution)."""
    if percent is None or percent.value is None:
        return []
    value = percent.value
    if value < 0 or value > 100 or 0 < value < 0.0001:
        return [invalid(f"{path}.value", value, "must be 0, or in the range 0.0001..100")]
    return []


# --- hosts, subsets, destinations ----------------------------------------------------------------


def subset_name_error(name: str) -> str | None:
    """Why `name` cannot name a subset (None when it can)."""
    return None if dns_label_ok(name) else "a subset name must be a DNS label"


def check_destination(path: str, dest: Destination | None) -> list[Cause]:
    """A destination names a service host (not `*`), optionally a subset and a port."""
    if dest is None:
        return []
    causes: list[Cause] = []
    if not dest.host:
        causes.append(required_because(f"{path}.host", "a destination host is required"))
    elif dest.host == "*":
        causes.append(invalid(f"{path}.host", dest.host, "the wildcard host is not a destination"))
    else:
        problem = wildcard_domain_error(dest.host)
        if problem:
            causes.append(invalid(f"{path}.host", dest.host, problem))
    if dest.subset:
        problem = subset_name_error(dest.subset)
        if problem:
            causes.append(invalid(f"{path}.subset", dest.subset, problem))
    if dest.port is not None:
        problem = port_error(dest.port.number or 0)
        if problem:
            causes.append(invalid(f"{path}.port.number", dest.port.number or 0, problem))
    return causes


class Weighted(Protocol):
    """A route destination: HTTPRouteDestination or RouteDestination."""

    destination: Destination
    weight: int | None


def check_route_destinations(path: str, routes: Sequence[Weighted]) -> list[Cause]:
    """Weights may not be negative, and several destinations may not all weigh 0.

    Istio normalises weights, so they need not add up to 100 (it stopped requiring that).
    """
    causes: list[Cause] = []
    for k, dest in enumerate(routes):
        causes += check_destination(f"{path}[{k}].destination", dest.destination)
        if (dest.weight or 0) < 0:
            causes.append(invalid(f"{path}[{k}].weight", dest.weight, "must be greater than or equal to 0"))
    if len(routes) > 1 and sum(d.weight or 0 for d in routes) == 0:
        causes.append(invalid(path, 0, "the total weight of several destinations must be greater than 0"))
    return causes


def check_gateway_names(path: str, names: list[str] | None) -> list[Cause]:
    """Gateway references: `mesh`, `name`, `namespace/name` or a legacy FQDN."""
    causes: list[Cause] = []
    for i, name in enumerate(names or []):
        ns, slash, gw = name.partition("/")
        if not slash:
            problem = fqdn_error(name)
        elif not ns or not gw:
            problem = "namespace and gateway name cannot be empty"
        elif not dns_label_ok(ns):
            problem = f"invalid namespace {ns!r}"
        elif not dns_label_ok(gw):
            problem = f"invalid gateway name {gw!r}"
        else:
            problem = None
        if problem:
            causes.append(invalid(f"{path}[{i}]", name, problem))
    return causes


# --- string matches and regular expressions ------------------------------------------------------

# RE2 constructs Python's `re` lacks; rewritten to an equivalent-enough form before compiling.
_RE2_ONLY = re.compile(r"\\[pP](\{[^}]*\}|[A-Za-z])|\\z")
# What Python accepts and RE2 refuses: look-around and back-references.
_NOT_RE2 = re.compile(r"\(\?(=|!|<=|<!)|\\[1-9]")


def regex_error(pattern: str) -> str | None:
    """Why `pattern` is not an RE2 expression Envoy will take (None when it is one)."""
    if len(pattern) > 1024:
        return "regex is too large, max length allowed is 1024"
    if _NOT_RE2.search(pattern):
        return "look-around and back-references are not RE2 syntax"
    try:
        re.compile(_RE2_ONLY.sub(".", pattern))
    except re.error as e:
        return f"invalid regex: {e}; Istio uses RE2 syntax"
    return None


def check_string_match(path: str, match: StringMatch | None, *, empty_prefix: bool = False) -> list[Cause]:
    """One of exact/prefix/regex; a prefix may not be empty (except on URIs); regexes are RE2."""
    if match is None:
        return []
    set_fields = [f for f in ("exact", "prefix", "regex") if getattr(match, f) is not None]
    if len(set_fields) > 1:
        return [forbidden(path, f"only one of exact, prefix or regex may be set (found {', '.join(set_fields)})")]
    if match.prefix == "" and not empty_prefix:
        return [invalid(f"{path}.prefix", "", "a prefix match may not be empty")]
    if match.regex is not None:
        problem = "a regex match may not be empty" if match.regex == "" else regex_error(match.regex)
        if problem:
            return [invalid(f"{path}.regex", match.regex, problem)]
    return []


# --- header names and values ---------------------------------------------------------------------

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~A-Za-z0-9]+$")
_PSEUDO_HEADERS = {":method", ":scheme", ":authority", ":path", ":status"}
_JWT_CLAIM = re.compile(r"^@request\.auth\.claims(\.[^.\[\]]+)+$|^@request\.auth\.claims(\[[^\[\]]+\])+$")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def is_jwt_claim(name: str) -> bool:
    """True for `@request.auth.claims.<name>` / `@request.auth.claims[a][b]` routing keys."""
    return bool(_JWT_CLAIM.match(name))


def match_header_name_error(name: str) -> str | None:
    """Header names in matches: an HTTP token, a pseudo-header or a JWT claim key."""
    if not name:
        return "header name cannot be empty"
    if is_jwt_claim(name) or name in _PSEUDO_HEADERS or _TOKEN.match(name):
        return None
    return "not a valid header name"


def header_op_name_error(name: str, *, authority_ok: bool) -> str | None:
    """Header names in set/add/remove: no pseudo-headers; Host only where authority may be set."""
    if not name:
        return "header name cannot be empty"
    is_authority = name.lower() in (":authority", "host")
    if authority_ok and is_authority:
        return None
    if name.lower() == "host":
        return "the Host header cannot be modified here"
    if name.startswith(":"):
        return "header cannot have a ':' prefix"
    return None


def header_value_error(value: str) -> str | None:
    """Why Envoy would refuse `value` as a header template (None when it takes it).

    Besides control characters, `%` starts a `%VARIABLE%` or `%VARIABLE(args)%` expression and
    a literal percent sign is written `%%`.
    """
    if _CONTROL.search(value):
        return "header values may not contain control characters"
    return _percent_syntax_error(value)


def _percent_syntax_error(value: str) -> str | None:
    # Envoy's header formatter grammar: `%%` is a literal percent sign, `%NAME%` a variable and
    # `%NAME(arg)%` or `%NAME(["a", "b"])%` a variable with arguments.
    state, pos = "literal", 0
    while pos < len(value):
        ch = value[pos]
        if state == "literal" and ch == "%":
            if pos + 1 == len(value):
                return "un-escaped '%' (write '%%' for a literal percent sign)"
            if value[pos + 1] == "%":
                pos += 2
                continue
            state = "name"
        elif state == "string" and ch == "\\":
            if pos + 1 == len(value):
                return "un-terminated backslash in a variable argument"
            pos += 1  # the escaped character is skipped below
        else:
            try:
                state = _next_state(state, ch)
            except ValueError as e:
                return str(e)
        pos += 1
    return None if state == "literal" else "un-terminated %VARIABLE% expression"


def _next_state(state: str, ch: str) -> str:
    """One step of the formatter grammar; raises ValueError on a character it cannot take."""
    space = ch == " "
    if state == "name":
        return {"%": "literal", "(": "array"}.get(ch, "name")
    if state == "array":
        return "string_start" if ch == "[" else "array" if space else "string"
    if state == "string":
        return {")": "var_end", '"': "delimiter"}.get(ch, "string")
    expected = {
        "delimiter": {",": "string_start", "]": "args_end"},
        "string_start": {'"': "string"},
        "args_end": {")": "var_end"},
        "var_end": {"%": "literal"},
    }.get(state)
    if expected is None:
        return state  # literal text
    if ch in expected:
        return expected[ch]
    if space:
        return state
    raise ValueError(f"malformed %VARIABLE% expression: expected one of {''.join(expected)!r}")


def _check_op_names(path: str, names: list[str], *, authority_ok: bool) -> list[Cause]:
    causes = []
    for name in names:
        problem = header_op_name_error(name, authority_ok=authority_ok)
        if problem:
            causes.append(invalid(path, name, problem))
    return causes


def check_headers(path: str, headers: Headers | None) -> list[Cause]:
    """Header edits: request set/add may target the authority; nothing may touch pseudo-headers."""
    if headers is None:
        return []
    causes: list[Cause] = []
    for side, ops in (("request", headers.request), ("response", headers.response)):
        if ops is None:
            continue
        for verb in ("set", "add"):
            values = getattr(ops, verb) or {}
            where = f"{path}.{side}.{verb}"
            causes += _check_op_names(where, list(values), authority_ok=side == "request")
            for name, value in values.items():
                problem = header_value_error(value)
                if problem:
                    causes.append(invalid(f"{where}.{name}", value, problem))
        causes += _check_op_names(f"{path}.{side}.remove", ops.remove or [], authority_ok=False)
    return causes


def authority_set_by(headers: Headers | None) -> list[str]:
    """The request header edits that would rewrite the authority (`:authority` or `Host`)."""
    request = headers.request if headers else None
    if request is None:
        return []
    edits = list((request.set or {}).items()) + list((request.add or {}).items())
    return [value for name, value in edits if name.lower() in (":authority", "host")]


# --- visibility and selectors --------------------------------------------------------------------


def _export_entry_error(entry: str, service_entry: bool) -> str | None:
    if entry in (".", "*") or (entry == "~" and service_entry):
        return None
    if entry == "~":
        return "exportTo ~ (none) is only allowed on ServiceEntry"
    return None if dns_label_ok(entry) else "must be '.', '*', '~' or a namespace name"


def check_export_to(
    path: str, export_to: list[str] | None, namespace: str, *, service_entry: bool = False
) -> list[Cause]:
    """exportTo: `.`, `*`, namespace names (and `~` on ServiceEntry), no duplicates, `*`/`~` alone."""
    entries = export_to or []
    causes: list[Cause] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        key = namespace if entry == "." and namespace else entry
        if key in seen:
            causes.append(invalid(f"{path}[{i}]", entry, "duplicate entry in exportTo"))
            continue
        problem = _export_entry_error(entry, service_entry)
        if problem:
            causes.append(invalid(f"{path}[{i}]", entry, problem))
        seen.add(key)
    if len(entries) > 1 and "*" in entries:
        causes.append(invalid(path, entries, "'*' (public) cannot be combined with other entries"))
    if len(entries) > 1 and "~" in entries and service_entry:
        causes.append(invalid(path, entries, "cannot export to no one (~) and someone"))
    return causes


def check_selector_labels(path: str, labels: dict[str, str] | None) -> list[Cause]:
    """Workload selectors: keys may not be empty and neither keys nor values may use `*`."""
    causes = []
    for key, value in (labels or {}).items():
        if not key:
            causes.append(invalid(path, f"{key}={value}", "empty key is not supported in selector"))
        elif "*" in key or "*" in value:
            causes.append(invalid(f"{path}.{key}", value, "wildcard is not supported in selector"))
    return causes


def base64_error(value: str) -> str | None:
    """Why `value` is not standard base64 (proto `bytes` in JSON), None when it is."""
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return "must be base64-encoded bytes"
    return None
