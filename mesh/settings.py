"""Process settings: one pydantic-settings object per process, filled from flags and environment.

Each field becomes a `--field-name` flag and a `MESH_FIELD_NAME` variable (fields may declare
other variable names, e.g. `DATABASE_URL`). Flags win over the environment. A bad value ends the
process with one line naming the setting, its value and the reason, as `NAME=VALUE (reason)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from mesh import plain_settings
from mesh.plain_settings import host_port

S = TypeVar("S", bound=BaseSettings)


class CommonSettings(BaseSettings):
    """Settings every process has."""

    model_config = SettingsConfigDict(env_prefix="MESH_", extra="ignore", populate_by_name=True)

    state_dir: Path = Path("/var/lib/mesh")
    log_level: str = "info"

    def ensure_state_dir(self) -> Path:
        """Create the state directory with mode 0700 (it holds keys and tokens)."""
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.state_dir.chmod(0o700)
        return self.state_dir


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_bool(annotation: Any) -> bool:
    return annotation is bool or (typing.get_origin(annotation) is typing.Union and bool in typing.get_args(annotation))


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    return origin is list or any(typing.get_origin(a) is list for a in typing.get_args(annotation))


def parse_settings(cls: type[S], prog: str, description: str, argv: list[str] | None = None) -> S:
    """Build an argument parser from `cls`, parse `argv`, and return the validated settings.
    A dataclass (ztunnel's: mesh/plain_settings.py) is parsed without pydantic, by the same rules."""
    if dataclasses.is_dataclass(cls):
        return plain_settings.parse(cls, prog, description, argv)  # type: ignore[type-var,return-value]
    parser = argparse.ArgumentParser(prog=prog, description=description)
    for name, info in cls.model_fields.items():
        env = f"MESH_{name.upper()}"
        alias = info.validation_alias
        if alias is not None and hasattr(alias, "choices"):
            env = " / ".join(str(c) for c in alias.choices)
        help_text = f"{info.description or ''} (env {env}; default {info.default!r})".strip()
        if _is_bool(info.annotation):
            parser.add_argument(_flag(name), dest=name, action="store_const", const=True, default=None, help=help_text)
        elif _is_list(info.annotation):
            parser.add_argument(_flag(name), dest=name, action="append", default=None, help=help_text + "; repeatable")
        else:
            parser.add_argument(_flag(name), dest=name, default=None, help=help_text)
    args = parser.parse_args(argv)
    given = {k: v for k, v in vars(args).items() if v is not None}
    try:
        return cls(**given)
    except ValidationError as e:
        first = e.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        value = given.get(field, first.get("input"))
        print(f"{prog}: MESH_{field.upper()}={value} ({first['msg'].removeprefix('Value error, ')})", file=sys.stderr)
        raise SystemExit(2) from None
    except SettingsError as e:
        # A list variable that is not JSON fails while the environment is read, before validation.
        found = re.search(r'field "(\w+)"', str(e))
        env = f"MESH_{found.group(1).upper() if found else '?'}"
        reason = f'expected JSON such as ["a", "b"]: {e.__cause__ or e}'
        print(f"{prog}: {env}={os.environ.get(env, '')} ({reason})", file=sys.stderr)
        raise SystemExit(2) from None


def _check_listen(value: str) -> str:
    host_port(value)
    return value


def _check_optional_listen(value: str) -> str:
    return _check_listen(value) if value else value


Listen = Annotated[str, AfterValidator(_check_listen)]
"""A `HOST:PORT` to listen on."""
OptionalListen = Annotated[str, AfterValidator(_check_optional_listen)]
"""A `HOST:PORT`, or empty for "do not listen"."""
