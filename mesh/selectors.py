"""Kubernetes label and field selectors: parsing, matching and the canonical string form.

Pure functions and frozen dataclasses; no I/O. The grammar and the matching rules follow
apimachinery's `labels` and `fields` packages, so that `?labelSelector=` and `?fieldSelector=`
(docs/kubectl-compat §4, §5) select what a real apiserver would, and errors read like its own
(`unable to parse requirement: ...`, `field label not supported: ...`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mesh.resources.base import label_value_error, qualified_name_error


class SelectorError(ValueError):
    """A selector that cannot be parsed or used; the API answers 400 BadRequest with its message."""


class Operator(StrEnum):
    """A label requirement's operator, valued as it is spelled in the string syntax."""

    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = ">"
    LESS_THAN = "<"


_SET_OPERATORS = (Operator.IN, Operator.NOT_IN)
_EXACT_OPERATORS = (Operator.EQUALS, Operator.NOT_EQUALS)
_NUMERIC_OPERATORS = (Operator.GREATER_THAN, Operator.LESS_THAN)


# --- label selectors -------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Requirement:
    """One term of a label selector: `key`, an operator and its values (sorted, without repeats).

    Build requirements by parsing: the constructor itself checks nothing.
    """

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether `labels` satisfy this term (apimachinery `Requirement.Matches`)."""
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.operator in (Operator.EQUALS, Operator.IN):
            return present and value in self.values
        if self.operator in (Operator.NOT_EQUALS, Operator.NOT_IN):
            # Kubernetes: `!=` and `notin` also select objects that lack the label.
            return not present or value not in self.values
        if self.operator is Operator.EXISTS:
            return present
        if self.operator is Operator.DOES_NOT_EXIST:
            return not present
        return present and _compare_int(value, self.operator, int(self.values[0]))

    def __str__(self) -> str:
        if self.operator is Operator.EXISTS:
            return self.key
        if self.operator is Operator.DOES_NOT_EXIST:
            return f"!{self.key}"
        if self.operator in _SET_OPERATORS:
            return f"{self.key} {self.operator.value} ({','.join(self.values)})"
        return f"{self.key}{self.operator.value}{self.values[0]}"


def _compare_int(value: str, operator: Operator, bound: int) -> bool:
    # Gt/Lt compare label values as integers; a value that is not one never matches.
    try:
        number = int(value)
    except ValueError:
        return False
    return number > bound if operator is Operator.GREATER_THAN else number < bound


@dataclass(frozen=True)
class LabelSelector:
    """A conjunction of requirements, kept sorted so equal selectors compare equal.

    The empty selector (no requirements) selects everything.
    """

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Whether an object with these labels (None meaning none) is selected."""
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        """True when the selector selects everything."""
        return not self.requirements

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _requirement(key: str, operator: Operator, values: Iterable[str], where: str = "") -> Requirement:
    """Check a requirement as apimachinery's `NewRequirement` does, and build it."""
    values = tuple(sorted(set(values)))
    if error := qualified_name_error(key):
        raise SelectorError(f"{where}key: Invalid value: {_quote(key)}: {error}")
    problem = None
    if operator in _SET_OPERATORS and not values:
        problem = "for 'in', 'notin' operators, values set can't be empty"
    elif operator in _EXACT_OPERATORS and len(values) != 1:
        problem = "exact-match compatibility requires one single value"
    elif operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and values:
        problem = "values set must be empty for exists and does not exist"
    elif operator in _NUMERIC_OPERATORS and (len(values) != 1 or not re.fullmatch(r"-?[0-9]+", values[0])):
        problem = "for 'Gt', 'Lt' operators, the value must be a single integer"
    if problem:
        raise SelectorError(f"{where}values: Invalid value: {_list(values)}: {problem}")
    for i, value in enumerate(values):
        if error := label_value_error(value):
            raise SelectorError(f"{where}values[{i}]: Invalid value: {_quote(value)}: {error}")
    return Requirement(key, operator, values)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _list(values: Iterable[str]) -> str:
    return "[" + ",".join(_quote(v) for v in values) + "]"


# The lexer of apimachinery's labels/selector.go: identifiers are runs of anything but whitespace
# and the special symbols; two-character operators win over their first character.
_TOKEN = re.compile(r"\s*(?:(!=|==|[=!(),<>])|([^\s=!(),<>]+))")
_END = ""


_BINARY_OPERATORS = {
    "=": Operator.EQUALS,
    "==": Operator.EQUALS,  # apimachinery's DoubleEquals, which matches exactly like Equals
    "!=": Operator.NOT_EQUALS,
    "in": Operator.IN,
    "notin": Operator.NOT_IN,
    ">": Operator.GREATER_THAN,
    "<": Operator.LESS_THAN,
}


class _Parser:
    """A recursive-descent parser over one selector string, one token of lookahead."""

    def __init__(self, text: str):
        # (kind, literal) pairs, kind being "id" or the symbol itself, then an end marker.
        self.tokens = [("id", m[2]) if m[2] else (m[1], m[1]) for m in _TOKEN.finditer(text)]
        self.tokens.append((_END, _END))
        self.pos = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos]

    def take(self) -> tuple[str, str]:
        token = self.tokens[self.pos]
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return token

    def selector(self) -> list[Requirement]:
        requirements = []
        while self.peek()[0] != _END:
            if self.peek()[0] not in ("id", "!"):
                raise SelectorError(f"found '{self.peek()[1]}', expected: !, identifier, or 'end of string'")
            try:
                requirements.append(self.requirement())
            except SelectorError as e:
                raise SelectorError(f"unable to parse requirement: {e}") from None
            kind, literal = self.take()
            if kind == ",":
                if self.peek()[0] not in ("id", "!"):
                    raise SelectorError(f"found '{self.peek()[1]}', expected: identifier after ','")
            elif kind != _END:
                raise SelectorError(f"found '{literal}', expected: ',' or 'end of string'")
        return requirements

    def requirement(self) -> Requirement:
        negated = self.peek()[0] == "!"
        if negated:
            self.take()
        kind, key = self.take()
        if kind != "id":
            raise SelectorError(f"found '{key}', expected: identifier")
        if error := qualified_name_error(key):
            raise SelectorError(f"key: Invalid value: {_quote(key)}: {error}")
        # `!k` takes no operator; whatever follows it is the caller's to refuse, as in apimachinery.
        if negated:
            return _requirement(key, Operator.DOES_NOT_EXIST, ())
        if self.peek()[0] in (",", _END):
            return _requirement(key, Operator.EXISTS, ())
        operator = self.operator()
        values = self.values() if operator in _SET_OPERATORS else (self.exact_value(),)
        return _requirement(key, operator, values)

    def operator(self) -> Operator:
        _, literal = self.take()
        # Keywords are only keywords here: `in=x` is a key, and `k=in` a value.
        if literal not in _BINARY_OPERATORS:
            raise SelectorError(f"found '{literal}', expected: in, notin, =, ==, !=, gt, lt")
        return _BINARY_OPERATORS[literal]

    def exact_value(self) -> str:
        # `k=` (nothing before ',' or the end) is the empty value, which is a valid label value.
        if self.peek()[0] in (",", _END):
            return ""
        kind, literal = self.take()
        if kind != "id":
            raise SelectorError(f"found '{literal}', expected: identifier")
        return literal

    def values(self) -> list[str]:
        """`(a,b)`; as in apimachinery, an empty slot (`()`, `(a,)`) is the empty value."""
        kind, literal = self.take()
        if kind != "(":
            raise SelectorError(f"found '{literal}', expected: '('")
        values = []
        expect_value = True
        while True:
            kind, literal = self.take()
            if kind == "id" and expect_value:
                values.append(literal)
                expect_value = False
            elif kind in (",", ")"):
                if expect_value:
                    values.append("")
                if kind == ")":
                    return values
                expect_value = True
            else:
                raise SelectorError(f"found '{literal}', expected: ',', ')' or identifier")


def parse_label_selector(text: str) -> LabelSelector:
    """Parse the string syntax of `?labelSelector=`: `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
    `k notin (a,b)`, `k`, `!k` (and apimachinery's `k>1`, `k<1`), comma-separated.

    Whitespace between tokens is ignored; the empty string selects everything. Keys and values are
    checked like label keys and values. Raises SelectorError.
    """
    return LabelSelector(tuple(sorted(_Parser(text).selector())))


def label_selector_from_object(obj: Mapping[str, Any] | None) -> LabelSelector:
    """Convert a structured metav1.LabelSelector (`matchLabels`, `matchExpressions`).

    None and `{}` select everything. Note that apimachinery's `LabelSelectorAsSelector` maps a nil
    selector to "nothing": callers for which a missing selector must match nothing (a Service
    without a selector, a policy's empty `selector`) have to check for None themselves.
    """
    if obj is None:
        return LabelSelector()
    if not isinstance(obj, Mapping):
        raise SelectorError("a label selector must be an object")
    match_labels = obj.get("matchLabels") or {}
    expressions = obj.get("matchExpressions") or []
    if not isinstance(match_labels, Mapping) or not isinstance(expressions, list):
        raise SelectorError("matchLabels must be an object and matchExpressions a list")
    requirements = []
    for key, value in match_labels.items():
        if not isinstance(value, str):
            raise SelectorError(f"matchLabels.{key}: Invalid value: must be a string")
        requirements.append(_requirement(key, Operator.EQUALS, (value,), where="matchLabels."))
    for i, expression in enumerate(expressions):
        requirements.append(_expression(expression, f"matchExpressions[{i}]."))
    return LabelSelector(tuple(sorted(requirements)))


_EXPRESSION_OPERATORS = {
    "In": Operator.IN,
    "NotIn": Operator.NOT_IN,
    "Exists": Operator.EXISTS,
    "DoesNotExist": Operator.DOES_NOT_EXIST,
}


def _expression(expression: Any, where: str) -> Requirement:
    if not isinstance(expression, Mapping):
        raise SelectorError(f"{where[:-1]}: Invalid value: must be an object")
    name = expression.get("operator")
    if name not in _EXPRESSION_OPERATORS:
        raise SelectorError(f"{_quote(str(name))} is not a valid label selector operator")
    key = expression.get("key")
    values = expression.get("values") or []
    if not isinstance(key, str) or not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise SelectorError(f"{where[:-1]}: Invalid value: key must be a string and values a list of strings")
    return _requirement(key, _EXPRESSION_OPERATORS[name], values, where=where)


# --- field selectors -------------------------------------------------------------------------------

ALWAYS_SUPPORTED_FIELDS = ("metadata.name", "metadata.namespace")
"""Fields every resource can be selected by, as in the apiserver's default field sets."""


@dataclass(frozen=True, order=True)
class FieldRequirement:
    """`field=value` (or `!=` when `negated`): compares the field's string form to `value`."""

    field: str
    value: str
    negated: bool = False

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Whether `obj` satisfies this term; a missing field reads as the empty string."""
        return (field_value(obj, self.field) == self.value) != self.negated

    def __str__(self) -> str:
        return f"{self.field}{'!=' if self.negated else '='}{_escape(self.value)}"


@dataclass(frozen=True)
class FieldSelector:
    """A conjunction of field requirements; the empty selector selects everything."""

    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Whether every requirement holds for `obj`."""
        return all(r.matches(obj) for r in self.requirements)

    def exact(self, field: str) -> str | None:
        """The value required by an `=`/`==` term on `field`, if any (to index by name or node)."""
        for r in self.requirements:
            if r.field == field and not r.negated:
                return r.value
        return None

    @property
    def empty(self) -> bool:
        """True when the selector selects everything."""
        return not self.requirements

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string form of the field at a dotted path, as the apiserver's field sets hold it."""
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_field_selector(text: str, supported: Iterable[str]) -> FieldSelector:
    """Parse `?fieldSelector=`: `f=v`, `f==v`, `f!=v`, comma-separated; the empty string selects all.

    `metadata.name` and `metadata.namespace` are always supported; any other field must be in
    `supported`. As in apimachinery, nothing is trimmed, and `\\,`, `\\=` and `\\\\` escape those
    characters in a value. Raises SelectorError (`field label not supported: f`).
    """
    allowed = set(supported) | set(ALWAYS_SUPPORTED_FIELDS)
    requirements = []
    for term in _split_escaped(text, ","):
        if not term:
            continue
        match = re.search(r"!=|==|=", term)
        if not match:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        field, value = term[: match.start()], _unescape(term[match.end() :])
        if field not in allowed:
            raise SelectorError(f"field label not supported: {field}")
        requirements.append(FieldRequirement(field, value, negated=match[0] == "!="))
    return FieldSelector(tuple(sorted(requirements)))


def _split_escaped(text: str, separator: str) -> list[str]:
    # Split on separators not preceded by an escaping backslash (apimachinery splitTerms).
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    # apimachinery UnescapeValue: only \\, \, and \= are escapes; a bare , or = is refused.
    out, chars = [], iter(value)
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            if following not in ("\\", ",", "="):
                raise SelectorError(f"invalid field selector: invalid escape sequence: \\{following}")
            char = following
        elif char in ",=":
            raise SelectorError(f"invalid field selector: unescaped character in value: {char}")
        out.append(char)
    return "".join(out)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
