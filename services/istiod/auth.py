"""Who is calling: bearer tokens mapped to principals, and what each principal may do.

Tokens: the admin token and a read-only token, both generated on first start and kept in the
state directory with mode 0600; optional extra tokens from a static token file in the
apiserver's `--token-auth-file` format (`token,user,uid,"group1,group2"`; the group
`system:masters` makes an admin). Node tokens (JWTs for each Node) join with the CA.
"""

from __future__ import annotations

import csv
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import errors

ADMIN, READER, NODE_ROLE = "admin", "reader", "node"
READ_VERBS = frozenset({"get", "list", "watch"})
# Kinds only admins may read: Kubernetes' view/reader roles and the node authorizer do not grant
# secrets either (a node may read only what its pods mount, and no pod here mounts a Secret).
ADMIN_ONLY_KINDS = frozenset({"secrets"})


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    user: str
    role: str
    groups: tuple[str, ...] = ()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def ensure_token_file(path: Path) -> str:
    """Read the token at `path`, creating it (mode 0600) with 256 random bits if missing."""
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(token + "\n")
    return token


class Authenticator:
    """Maps bearer tokens to principals; unknown or missing tokens are 401."""

    def __init__(self) -> None:
        self._tokens: dict[bytes, Principal] = {}
        self.extra: list[Callable[[str], Principal | None]] = []  # e.g. node-token verification

    def add(self, token: str, principal: Principal) -> None:
        self._tokens[_digest(token)] = principal

    def load_token_file(self, path: Path) -> None:
        """Static tokens, one per line: `token,user,uid,"group1,group2"`."""
        with path.open(newline="") as f:
            for line_no, row in enumerate(csv.reader(f), start=1):
                if not row or row[0].startswith("#"):
                    continue
                if len(row) < 2:
                    raise ValueError(f"{path}:{line_no}: expected token,user[,uid[,groups]]")
                groups = tuple(g.strip() for g in row[3].split(",")) if len(row) > 3 and row[3] else ()
                role = ADMIN if "system:masters" in groups else READER
                self.add(row[0].strip(), Principal(row[1].strip(), role, groups))

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise errors.unauthorized()
        token = authorization[7:].strip()
        if not token:  # never match a token file line whose token column is empty
            raise errors.unauthorized()
        principal = self._tokens.get(_digest(token))
        if principal is not None:
            return principal
        for verify in self.extra:
            principal = verify(token)
            if principal is not None:
                return principal
        raise errors.unauthorized()


def may(principal: Principal, verb: str, kind_key: str = "") -> bool:
    """Admins may do everything; readers and nodes read, except the admin-only kinds (Secrets)."""
    if principal.role == ADMIN:
        return True
    if kind_key in ADMIN_ONLY_KINDS:
        return False
    return principal.role in (READER, NODE_ROLE) and verb in READ_VERBS
