"""Header modifications of routes (`request_headers_to_add` / `_to_remove`, and the response
pair): compiled from Envoy messages into data, then applied to header lists by pure functions.

Envoy's rules (HeaderValueOption, route docs "Custom request/response headers"):
- within one level, the removals run before the additions;
- an addition's action is `append_action` (default APPEND_IF_EXISTS_OR_ADD), or the deprecated
  `append` when set (true: append, false: overwrite);
- an addition with an empty value is skipped unless `keep_empty_value`;
- pseudo-headers and `host` are never removed.
Values are taken literally: Envoy's `%COMMAND%` substitutions are not evaluated.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2

Headers = list[tuple[str, str]]


class AppendAction(enum.Enum):
    """HeaderValueOption.HeaderAppendAction."""

    APPEND_IF_EXISTS_OR_ADD = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
    ADD_IF_ABSENT = base_pb2.HeaderValueOption.ADD_IF_ABSENT
    OVERWRITE_IF_EXISTS_OR_ADD = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    OVERWRITE_IF_EXISTS = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS


@dataclass(frozen=True)
class HeaderAddition:
    """One header to add: lower-case name, value, action."""

    name: str
    value: str
    action: AppendAction = AppendAction.APPEND_IF_EXISTS_OR_ADD


@dataclass(frozen=True)
class HeaderMutation:
    """One level's modifications (weighted cluster, route, virtual host or route configuration)."""

    remove: tuple[str, ...] = ()
    add: tuple[HeaderAddition, ...] = ()

    @classmethod
    def from_proto(cls, to_add: Iterable[base_pb2.HeaderValueOption], to_remove: Iterable[str]) -> HeaderMutation:
        """Compile a level's `*_headers_to_add` and `*_headers_to_remove`."""
        additions = []
        for option in to_add:
            value = (
                option.header.raw_value.decode("utf-8", "replace") if option.header.raw_value else option.header.value
            )
            if not value and not option.keep_empty_value:
                continue
            if option.HasField("append"):
                action = (
                    AppendAction.APPEND_IF_EXISTS_OR_ADD
                    if option.append.value
                    else AppendAction.OVERWRITE_IF_EXISTS_OR_ADD
                )
            else:
                action = AppendAction(option.append_action)
            additions.append(HeaderAddition(option.header.key.lower(), value, action))
        return cls(remove=tuple(name.lower() for name in to_remove), add=tuple(additions))

    def __bool__(self) -> bool:
        return bool(self.remove or self.add)


def apply(headers: Sequence[tuple[str, str]], mutations: Iterable[HeaderMutation]) -> Headers:
    """The headers after each level's modifications, in order; the input is not changed."""
    result = list(headers)
    for mutation in mutations:
        removable = {n for n in mutation.remove if not n.startswith(":") and n != "host"}
        result = [(k, v) for k, v in result if k.lower() not in removable]
        for addition in mutation.add:
            result = _add(result, addition)
    return result


def _add(headers: Headers, addition: HeaderAddition) -> Headers:
    present = any(k.lower() == addition.name for k, _ in headers)
    action = addition.action
    if action is AppendAction.APPEND_IF_EXISTS_OR_ADD:
        return [*headers, (addition.name, addition.value)]
    if action is AppendAction.ADD_IF_ABSENT:
        return headers if present else [*headers, (addition.name, addition.value)]
    if action is AppendAction.OVERWRITE_IF_EXISTS and not present:
        return headers
    # Overwrite: the first occurrence takes the new value in place, the others go.
    result: Headers = []
    replaced = False
    for k, v in headers:
        if k.lower() != addition.name:
            result.append((k, v))
        elif not replaced:
            result.append((addition.name, addition.value))
            replaced = True
    return result if replaced else [*result, (addition.name, addition.value)]
