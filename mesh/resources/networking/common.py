"""Pieces shared by the networking.istio.io/v1 schemas: scalar types that follow the protobuf
JSON mapping Istio's CRDs use, the small messages several kinds embed (PortSelector, Destination,
StringMatch, Percent, Headers, selectors), and the printer-column helper for list values.

Cross-field rules live in `checks.py`; this module only describes shapes.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from ..base import Model
from ..kind import Getter, jsonpath

Json = dict[str, Any]

GROUP = "networking.istio.io"
VERSION = "v1"
CATEGORIES = ("istio-io", "networking-istio-io")

# --- scalars in their protobuf JSON form ---------------------------------------------------------

UInt32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
"""A proto `uint32` (also `google.protobuf.UInt32Value`): 0 to 4294967295."""

Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
"""A proto `int32`: protobuf refuses anything outside the 32-bit range."""

UInt64 = Annotated[int, Field(ge=0, le=2**64 - 1)]
"""A proto `uint64`."""

# Go's time.ParseDuration units, longest first within a prefix ("ms" before "m").
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NANOS_PER_UNIT = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def duration_nanos(value: str) -> int | None:
    """Nanoseconds in a duration string, or None when it is not one.

    Istio's JSON decoding of `google.protobuf.Duration` goes through Go's `time.ParseDuration`,
    so besides the canonical `"1.5s"` it takes `"5m"`, `"30ms"` or `"1h30m"` - and Istio's own
    documentation uses those forms (`baseEjectionTime: 15m`, `connectTimeout: 30ms`).
    """
    text = value
    sign = -1 if text.startswith("-") else 1
    if text[:1] in "+-":
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        return None
    total = Decimal(0)
    pos = 0
    while pos < len(text):
        part = _DURATION_PART.match(text, pos)
        if part is None:
            return None
        total += Decimal(part.group(1)) * _NANOS_PER_UNIT[part.group(2)]
        pos = part.end()
    return sign * int(total)


def _duration(value: str) -> str:
    if duration_nanos(value) is None:
        raise ValueError("must be a duration such as '5s', '0.250s', '30ms' or '1m30s'")
    return value


Duration = Annotated[str, AfterValidator(_duration)]
"""A `google.protobuf.Duration` as Istio decodes it (`"5s"`, `"0.5s"`, `"30ms"`, `"15m"`).

`base.ProtoDuration` only takes the canonical seconds form; Istio's examples need more.
"""

# --- small shared messages -----------------------------------------------------------------------


class Percent(Model):
    """A percentage as a double, 0.0 to 100.0 (`{value: 50}`)."""

    value: float | None = None


class PortSelector(Model):
    """The port of a destination host: `{number: 9080}`."""

    number: UInt32 | None = None


class Destination(Model):
    """A service (and optionally a subset and port) traffic is sent to."""

    host: str
    subset: str | None = None
    port: PortSelector | None = None


class StringMatch(Model):
    """One of `exact`, `prefix` or `regex` (RE2); an empty match means "present"."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None


class HeaderOperations(Model):
    """Header edits: overwrite (`set`), append (`add`) and `remove`."""

    set: dict[str, str] | None = None
    add: dict[str, str] | None = None
    remove: list[str] | None = None


class Headers(Model):
    """Header edits for the request sent upstream and the response returned."""

    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class WorkloadLabelSelector(Model):
    """networking.v1alpha3.WorkloadSelector (ServiceEntry): `{labels: {app: x}}`."""

    labels: dict[str, str] | None = None


class WorkloadSelector(Model):
    """type.v1beta1.WorkloadSelector (DestinationRule): `{matchLabels: {app: x}}`."""

    match_labels: dict[str, str] | None = None


# --- printer columns -----------------------------------------------------------------------------


def json_column(path: str) -> Getter:
    """A getter that renders lists and maps the way the apiserver renders CRD columns.

    For a `type: string` column whose JSONPath yields an array, kubectl shows compact JSON
    (`["bookinfo-gateway"]`); a missing field gives no value (kubectl prints `<none>`).
    """
    get = jsonpath(path)

    def render(obj: Json) -> Any:
        """The column's cell for one object."""
        value = get(obj)
        if isinstance(value, list | dict):
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return value

    return render


def namespace_of(obj: Json) -> str:
    """The object's namespace ("" when the document does not carry one)."""
    return (obj.get("metadata") or {}).get("namespace") or ""


# --- host name overlap (Istio's host.Name) -------------------------------------------------------


def host_matches(a: str, b: str) -> bool:
    """True when two host names overlap: equal, or one wildcard covers the other."""
    a_wild, b_wild = a.startswith("*"), b.startswith("*")
    if a_wild and b_wild:
        shorter, longer = sorted((a, b), key=len)
        return longer[1:].endswith(shorter[1:])
    if a_wild:
        return b.endswith(a[1:])
    if b_wild:
        return a.endswith(b[1:])
    return a == b


def host_subset_of(a: str, b: str) -> bool:
    """True when every name `a` matches is also matched by `b`."""
    if a.startswith("*"):
        return b.startswith("*") and a[1:].endswith(b[1:])
    if b.startswith("*"):
        return a.endswith(b[1:])
    return a == b
