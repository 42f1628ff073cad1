"""Field conversions the domain types share: proto3 enum values and port numbers."""

from __future__ import annotations

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from .errors import ResourceError


def enum_name(enum: EnumTypeWrapper, value: int, where: str) -> str:
    """The name of a proto3 enum value. Proto3 enums are open, so a number this build does not
    know (sent by a newer istiod) arrives as a bare int: refuse it rather than guess."""
    try:
        return enum.Name(value)
    except ValueError:
        raise ResourceError(f"{where}: unknown value {value}") from None


def port(value: int, where: str) -> int:
    """A uint32 field that must hold a TCP port (0 allowed: "unset" where the schema says so)."""
    if value > 65535:
        raise ResourceError(f"{where}: {value} is not a port")
    return value
