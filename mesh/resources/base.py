"""Building blocks for resource schemas: the strict model base, Kubernetes syntax types, and
the conversion of validation failures into Kubernetes `Status` causes.

Every kind's schema is a pydantic model built from these pieces. The models only *check* a
document; the stored object is the document itself (minus refused unknown fields), so that
`kubectl apply` sees back exactly what it sent and reports `unchanged`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from mesh.names import (
    WILDCARD_DNS,
    dns1035_label_error,
    dns1123_label_error,
    dns1123_subdomain_error,
    label_value_error,
    qualified_name_error,
)

# --- the model base -----------------------------------------------------------------------------


class Model(BaseModel):
    """Base of every schema: camelCase on the wire, unknown fields refused, no type coercion.

    Kubernetes refuses `"80"` where an integer is expected and never guesses; `strict=True`
    does the same. Unknown fields surface as `extra_forbidden` errors, which `check()` splits
    from real errors so the caller can apply the request's `fieldValidation` to them.
    """

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
    )


class FreeForm(BaseModel):
    """A map whose contents this project does not interpret (kept as given)."""

    model_config = ConfigDict(extra="allow")


def _checker(check):
    def validate(value: str) -> str:
        problem = check(value)
        if problem:
            raise ValueError(problem)
        return value

    return validate


DNSLabel = Annotated[str, AfterValidator(_checker(dns1123_label_error))]
DNSSubdomain = Annotated[str, AfterValidator(_checker(dns1123_subdomain_error))]
DNS1035Label = Annotated[str, AfterValidator(_checker(dns1035_label_error))]
LabelKey = Annotated[str, AfterValidator(_checker(qualified_name_error))]
LabelValue = Annotated[str, AfterValidator(_checker(label_value_error))]


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    # Checked as a whole so a bad key is reported at the map (`metadata.labels`), as the
    # apiserver does, rather than at a path that embeds the key.
    for key, value in labels.items():
        problem = qualified_name_error(key)
        if problem:
            raise ValueError(f"key {key!r}: {problem}")
        problem = label_value_error(value)
        if problem:
            raise ValueError(f"value {value!r} of {key!r}: {problem}")
    return labels


def _check_keys(values: dict[str, str]) -> dict[str, str]:
    for key in values:
        problem = qualified_name_error(key)
        if problem:
            raise ValueError(f"key {key!r}: {problem}")
    return values


Labels = Annotated[dict[str, str], AfterValidator(_check_labels)]
"""A label map: keys and values checked as Kubernetes does."""
Annotations = Annotated[dict[str, str], AfterValidator(_check_keys)]
"""An annotation map: keys checked as label keys, values free."""

Port = Annotated[int, Field(ge=1, le=65535)]
"""A TCP/UDP port number, 1 to 65535."""


def _hostname_error(value: str) -> str | None:
    if value == "*" or WILDCARD_DNS.match(value.lower()) or not dns1123_subdomain_error(value.lower()):
        return None
    return "must be a DNS name, optionally with a leading '*.' wildcard"


Hostname = Annotated[str, AfterValidator(_checker(_hostname_error))]
"""A DNS name as used in hosts lists: `example.com`, `*.example.com`, or `*`."""

_PROTO_DURATION = re.compile(r"^-?[0-9]+(\.[0-9]{1,9})?s$")


def _proto_duration_error(value: str) -> str | None:
    if not _PROTO_DURATION.match(value):
        return "must be a duration in seconds such as '5s' or '0.250s'"
    return None


ProtoDuration = Annotated[str, AfterValidator(_checker(_proto_duration_error))]
"""google.protobuf.Duration in its JSON form (Istio's APIs): `"1.5s"`."""

_GATEWAY_DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")


def _gateway_duration_error(value: str) -> str | None:
    if not _GATEWAY_DURATION.match(value):
        return "must be a Gateway API duration such as '1h', '30s' or '500ms' (GEP-2257)"
    return None


GatewayDuration = Annotated[str, AfterValidator(_checker(_gateway_duration_error))]
"""A Gateway API duration (GEP-2257): `"1h"`, `"10s"`, `"500ms"`."""


def _ip_error(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "must be a valid IP address (e.g. 10.9.8.7 or 2001:db8::ffff)"
    return None


def _ip_or_cidr_error(value: str) -> str | None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return "must be an IP address or a CIDR block (e.g. 10.0.0.0/16)"
    return None


IPAddress = Annotated[str, AfterValidator(_checker(_ip_error))]
IPOrCIDR = Annotated[str, AfterValidator(_checker(_ip_or_cidr_error))]


def _int_or_string(value: Any) -> Any:
    # Kubernetes' IntOrString: a JSON number (integer) or a string. Booleans are not integers.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be an integer or a string")
    return value


IntOrString = Annotated[int | str, BeforeValidator(_int_or_string)]


# --- failures as Kubernetes causes ---------------------------------------------------------------


@dataclass(frozen=True)
class Cause:
    """One reason an object was refused, in the shape of a Kubernetes `StatusCause`."""

    field: str
    reason: str  # FieldValueRequired, FieldValueInvalid, FieldValueNotSupported, FieldValueDuplicate, ...
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """`('spec', 'rules', 0, 'from')` → `spec.rules[0].from`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _quote(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return '"object"' if isinstance(value, dict) else '"array"'


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic adds tags for union members and function validators ("function-after[...]",
    # "int", "str"); they are not part of the document's path.
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in _UNION_TAGS)))


_UNION_TAGS = {"int", "str", "float", "bool", "list", "dict", "none"}


def causes_from_pydantic(
    error: ValidationError, prefix: tuple[Any, ...] = ()
) -> tuple[list[Cause], list[tuple[Any, ...]]]:
    """Split a pydantic failure into (causes, locations of unknown fields).

    Messages follow apimachinery's field errors: `Required value`, `Invalid value: "x": why`,
    `Unsupported value: "x": supported values: "a", "b"`.
    """
    causes: list[Cause] = []
    unknown: list[tuple[Any, ...]] = []
    for err in error.errors(include_url=False):
        loc = prefix + _clean_loc(tuple(err["loc"]))
        path = field_path(loc)
        kind = err["type"]
        value = err.get("input")
        if kind == "extra_forbidden":
            unknown.append(loc)
            continue
        if kind == "missing":
            causes.append(Cause(path, "FieldValueRequired", "Required value"))
        elif kind in ("literal_error", "enum"):
            expected = err.get("ctx", {}).get("expected", "")
            supported = ", ".join(_quote(v.strip().strip("'")) for v in re.split(r",| or ", expected) if v.strip())
            causes.append(
                Cause(
                    path,
                    "FieldValueNotSupported",
                    f"Unsupported value: {_quote(value)}: supported values: {supported}",
                )
            )
        else:
            why = err["msg"]
            if why.startswith("Value error, "):
                why = why[len("Value error, ") :]
            causes.append(Cause(path, "FieldValueInvalid", f"Invalid value: {_quote(value)}: {why}"))
    return _dedupe(causes), list(dict.fromkeys(unknown))


def _dedupe(causes: list[Cause]) -> list[Cause]:
    seen: set[tuple[str, str]] = set()
    out = []
    for c in causes:
        if (c.field, c.message) not in seen:
            seen.add((c.field, c.message))
            out.append(c)
    return out


def invalid(path: str, value: Any, why: str) -> Cause:
    """A `FieldValueInvalid` cause with apimachinery's wording."""
    return Cause(path, "FieldValueInvalid", f"Invalid value: {_quote(value)}: {why}")


def required(path: str) -> Cause:
    return Cause(path, "FieldValueRequired", "Required value")


def forbidden(path: str, why: str) -> Cause:
    return Cause(path, "FieldValueForbidden", f"Forbidden: {why}")


def duplicate(path: str, value: Any) -> Cause:
    return Cause(path, "FieldValueDuplicate", f"Duplicate value: {_quote(value)}")
