"""Settings without pydantic, for a process that must stay small (ztunnel: pydantic and
pydantic-settings would cost it 12 MB of its 60 MB budget).

The contract is mesh/settings.py's: each field is a `--field-name` flag and a `MESH_FIELD_NAME`
variable, a flag wins over the variable, and a bad value ends the process with one line
`prog: NAME=VALUE (reason)`. A settings class is a dataclass deriving from `PlainSettings` whose
fields come from `setting(...)`; the types understood are str, int, float, bool and Path, each
optionally `| None` (an empty value then means None).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from pathlib import Path
from typing import Any, TypeVar

S = TypeVar("S", bound="PlainSettings")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def setting(default: Any, description: str = "", *, ge: float | None = None, le: float | None = None) -> Any:
    """A field: its default, its --help text, and optional bounds checked when it is parsed."""
    return dataclasses.field(default=default, metadata={"description": description, "ge": ge, "le": le})


@dataclasses.dataclass
class PlainSettings:
    """Settings every process has (as mesh.settings.CommonSettings)."""

    state_dir: Path = setting(Path("/var/lib/mesh"), "the process's state directory")
    log_level: str = setting("info", "debug, info, warning or error")


def host_port(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Split `HOST:PORT` (or `:PORT`, `[v6]:PORT`) and check the port."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or default_host
    return host, int(port)


def _kind(hint: Any) -> tuple[type, bool]:
    """The field's base type, and whether None is allowed."""
    args = typing.get_args(hint)
    if type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return hint, False


def convert(raw: str, hint: Any, metadata: typing.Mapping[str, Any]) -> Any:
    """`raw` as the field's type, within its bounds; ValueError says why not."""
    kind, optional = _kind(hint)
    if optional and raw == "":
        return None
    if kind is bool:
        if raw.lower() not in _TRUE | _FALSE:
            raise ValueError("expected true or false")
        return raw.lower() in _TRUE
    if kind is int:
        try:
            value: Any = int(raw)
        except ValueError:
            raise ValueError("expected an integer") from None
    elif kind is float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("expected a number") from None
    elif kind is Path:
        value = Path(raw)
    else:
        value = raw
    if metadata.get("ge") is not None and value < metadata["ge"]:
        raise ValueError(f"must be >= {metadata['ge']}")
    if metadata.get("le") is not None and value > metadata["le"]:
        raise ValueError(f"must be <= {metadata['le']}")
    return value


def parse(cls: type[S], prog: str, description: str, argv: list[str] | None = None) -> S:
    """Build an argument parser from `cls`, parse `argv` and the environment, return the settings."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    parser = argparse.ArgumentParser(prog=prog, description=description)
    for f in fields:
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('description', '')} (env MESH_{f.name.upper()}; default {f.default!r})".strip()
        if _kind(hints[f.name])[0] is bool:
            parser.add_argument(flag, dest=f.name, action="store_const", const="true", default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=help_text)
    args = vars(parser.parse_args(argv))
    values = {}
    for f in fields:
        env = f"MESH_{f.name.upper()}"
        raw = args[f.name] if args[f.name] is not None else os.environ.get(env)
        if raw is None:
            continue
        try:
            values[f.name] = convert(raw, hints[f.name], f.metadata)
        except ValueError as e:
            print(f"{prog}: {env}={raw} ({e})", file=sys.stderr)
            raise SystemExit(2) from None
    return cls(**values)
