"""The served kinds, indexed the ways the API looks them up."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .core import CORE_KINDS
from .gateway import GATEWAY_KINDS, GRANT_KINDS
from .kind import ResourceKind
from .networking import NETWORKING_KINDS
from .security import SECURITY_KINDS

ALL_KINDS: tuple[ResourceKind, ...] = CORE_KINDS + SECURITY_KINDS + NETWORKING_KINDS + GATEWAY_KINDS + GRANT_KINDS


@dataclass
class Registry:
    """Lookup of kinds by (group, version, plural), by key, and by (apiVersion, kind)."""

    kinds: tuple[ResourceKind, ...]
    _by_path: dict[tuple[str, str, str], ResourceKind] = field(default_factory=dict)
    _by_key: dict[str, ResourceKind] = field(default_factory=dict)
    _by_gvk: dict[tuple[str, str], ResourceKind] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for k in self.kinds:
            self._by_path[(k.group, k.version, k.plural)] = k
            self._by_key[k.key] = k
            self._by_gvk[(k.api_version, k.kind)] = k

    def by_path(self, group: str, version: str, plural: str) -> ResourceKind | None:
        return self._by_path.get((group, version, plural))

    def by_key(self, key: str) -> ResourceKind | None:
        return self._by_key.get(key)

    def by_gvk(self, api_version: str, kind: str) -> ResourceKind | None:
        return self._by_gvk.get((api_version, kind))

    def group_versions(self) -> dict[str, list[str]]:
        """`{group: [versions]}` in registration order ('' is the core group)."""
        out: dict[str, list[str]] = {}
        for k in self.kinds:
            versions = out.setdefault(k.group, [])
            if k.version not in versions:
                versions.append(k.version)
        return out

    def in_group_version(self, group: str, version: str) -> Iterable[ResourceKind]:
        return (k for k in self.kinds if k.group == group and k.version == version)


def default_registry() -> Registry:
    return Registry(ALL_KINDS)
