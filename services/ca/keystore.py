"""The CA's keys on disk: a self-signed root kept in the state directory, or plugged-in cacerts.

Self-signed mode keeps `{state_dir}/ca/` (mode 0700): `roots.json` (one record per root: id,
created_at, activate_at, overlap_seconds), `root-{id}.pem`, `root-{id}-key.pem` (PKCS#8, mode
0600 from the first byte), and `lock`, flock'd around each read-modify-write so the CA and the
`rotate-root` CLI can share the directory.

A root's state is derived, never stored, from roots.json and the `now` the caller passes (tests
drive time): *pending* (trusted, not signing) until its activate_at; *active* (signing) until a
newer root activates; *retiring* (trusted) for its successor's overlap_seconds, the longest a
leaf it signed can live; then *retired* (out of the bundle; files removed at the next rotation).

Plugged mode reads Istio's cacerts layout (ca-cert.pem, ca-key.pem, root-cert.pem,
cert-chain.pem) and signs as that intermediate. It is checked completely when loaded, so a
misconfiguration stops the CA at start-up instead of yielding chains that fail to verify.

Thread safety: readers (`signing`, `trust_bundle`, `roots`) see one immutable snapshot, which
`reload` and `rotate` replace whole under a lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .authority import AuthorityError, SigningCA, cert_pem, make_root

ROOTS_FILE = "roots.json"
PLUGGED_FILES = ("ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem")
_ID = re.compile(r"^[0-9a-f]{16}$")


class KeyStoreError(Exception):
    """The CA's key material is missing, unreadable, inconsistent, or the request makes no sense."""


class RootState(StrEnum):
    """Where a self-signed root is in its lifecycle at a given time (see the module docstring)."""

    PENDING = "pending"
    ACTIVE = "active"
    RETIRING = "retiring"
    RETIRED = "retired"


@dataclass(frozen=True)
class RootStatus:
    """One root as seen at a given time: what `mesh-ca rotate-root` and status pages show."""

    id: str
    state: RootState
    activate_at: datetime
    retire_at: datetime | None  # set once a successor has activated
    not_after: datetime


@dataclass(frozen=True)
class _Record:
    id: str
    created_at: datetime
    activate_at: datetime
    overlap: timedelta  # how long the previous root stays trusted after this one activates

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "activate_at": self.activate_at.isoformat(),
            "overlap_seconds": int(self.overlap.total_seconds()),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> _Record:
        root_id = str(raw["id"])
        if not _ID.match(root_id):
            raise ValueError(f"root id {root_id!r} is not 16 hex digits")
        return cls(
            id=root_id,
            created_at=datetime.fromisoformat(str(raw["created_at"])),
            activate_at=datetime.fromisoformat(str(raw["activate_at"])),
            overlap=timedelta(seconds=int(raw["overlap_seconds"])),
        )


@dataclass(frozen=True)
class _Root:
    record: _Record
    signer: SigningCA
    pem: str


@dataclass(frozen=True)
class _Plugged:
    signer: SigningCA
    bundle: tuple[str, ...]  # root-cert.pem's certificates, the one above ca-cert first


class KeyStore:
    """The CA's signing material and trust bundle; open it with `KeyStore.open`."""

    def __init__(self, trust_domain: str, ca_dir: Path, cacerts_dir: Path | None) -> None:
        self.trust_domain = trust_domain
        self.ca_dir = ca_dir
        self.cacerts_dir = cacerts_dir
        self._lock = threading.Lock()
        self._roots: tuple[_Root, ...] = ()
        self._plugged: _Plugged | None = None

    @classmethod
    def open(
        cls, state_dir: Path, trust_domain: str, *, cacerts_dir: Path | None = None, now: datetime | None = None
    ) -> KeyStore:
        """Load the CA's keys: from `cacerts_dir` when given (plugged mode), else from
        `{state_dir}/ca/`, generating the first root there on first start."""
        store = cls(trust_domain, Path(state_dir) / "ca", cacerts_dir)
        now = now or datetime.now(UTC)
        if cacerts_dir is not None:
            store._plugged = _load_plugged(Path(cacerts_dir), now)
            return store
        store.ca_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        store.ca_dir.chmod(0o700)  # also when it existed: it holds private keys
        with store._lock, store._file_lock():
            records = store._read_records()
            if records is None:
                records = [store._new_root(now, activate_at=now, overlap=timedelta(0))]
                store._write_records(records)
            store._roots = store._load_roots(records)
        return store

    @property
    def plugged(self) -> bool:
        """True when signing with a plugged-in intermediate (no rotation from here)."""
        return self._plugged is not None

    def signing(self, now: datetime) -> SigningCA:
        """What signs leaves at `now`: the active root, or the plugged-in intermediate."""
        if self._plugged is not None:
            return self._plugged.signer
        roots = self._roots
        return roots[_active_index(roots, now)].signer

    def trust_bundle(self, now: datetime) -> list[str]:
        """PEMs of every root a peer must trust at `now`, the one that signs first."""
        if self._plugged is not None:
            return list(self._plugged.bundle)
        roots, states = self._roots, self.roots(now)
        trusted = [r.pem for r, s in zip(roots, states, strict=True) if s.state is not RootState.RETIRED]
        active = roots[_active_index(roots, now)].pem
        return [active, *(pem for pem in trusted if pem != active)]

    def roots(self, now: datetime) -> list[RootStatus]:
        """Each self-signed root with its state at `now`, oldest first (empty in plugged mode)."""
        return _timeline(self._roots, now)

    def rotate(
        self, now: datetime, *, activate_after: timedelta, max_cert_ttl: timedelta = timedelta(hours=24)
    ) -> RootStatus:
        """Add a new root that joins the bundle now and signs from `now + activate_after`.

        `activate_after` should exceed the time every peer needs to fetch the new bundle;
        `max_cert_ttl` must be at least the longest lifetime this CA issues, since the old root
        stays trusted that long after the switch. Refused while another rotation is pending.
        Roots already retired are deleted here, the only place roots.json is rewritten.
        """
        if self._plugged is not None:
            raise KeyStoreError("plugged-in CA: rotate by replacing the files in the cacerts directory")
        if activate_after < timedelta(0) or max_cert_ttl <= timedelta(0):
            raise KeyStoreError("activate_after must be >= 0 and max_cert_ttl > 0")
        with self._lock, self._file_lock():
            roots = self._load_roots(self._read_records())  # another process may have rotated
            states = _timeline(roots, now)
            pending = next((s for s in states if s.state is RootState.PENDING), None)
            if pending is not None:
                raise KeyStoreError(
                    f"root {pending.id} is already pending until {pending.activate_at.isoformat()}; "
                    "wait for it to activate before rotating again"
                )
            keep = [r.record for r, s in zip(roots, states, strict=True) if s.state is not RootState.RETIRED]
            new = self._new_root(now, activate_at=now + activate_after, overlap=max_cert_ttl)
            self._write_records([*keep, new])
            for s in states:
                if s.state is RootState.RETIRED:
                    for name in (f"root-{s.id}-key.pem", f"root-{s.id}.pem"):
                        (self.ca_dir / name).unlink(missing_ok=True)
            self._roots = self._load_roots([*keep, new])
        return next(s for s in self.roots(now) if s.id == new.id)

    def reload(self, now: datetime | None = None) -> None:
        """Re-read the key material: roots.json (a rotation by another process) or cacerts.

        On error the previous material stays in use and `KeyStoreError` says what is wrong.
        """
        if self._plugged is not None and self.cacerts_dir is not None:
            self._plugged = _load_plugged(self.cacerts_dir, now or datetime.now(UTC))
            return
        with self._lock, self._file_lock():
            self._roots = self._load_roots(self._read_records())

    def write_bundle(self, path: Path, now: datetime | None = None) -> None:
        """Write the trust bundle at `now` to `path` atomically (readers see old or new, whole)."""
        _write_atomic(Path(path), "".join(self.trust_bundle(now or datetime.now(UTC))).encode(), mode=0o644)

    # --- self-signed roots on disk ---------------------------------------------------------------

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        fd = os.open(self.ca_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read_records(self) -> list[_Record] | None:
        """The records in roots.json; None only when there is no such file (a first start)."""
        path = self.ca_dir / ROOTS_FILE
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text())
            if raw.get("trust_domain") != self.trust_domain:
                raise KeyStoreError(
                    f"{path} holds roots for trust domain {raw.get('trust_domain')!r}, not {self.trust_domain!r}; "
                    "changing the trust domain needs a new state directory"
                )
            records = [_Record.from_json(r) for r in raw["roots"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise KeyStoreError(f"{path} is unreadable: {e}") from None
        return records

    def _write_records(self, records: list[_Record]) -> None:
        body = {"version": 1, "trust_domain": self.trust_domain, "roots": [r.to_json() for r in records]}
        _write_atomic(self.ca_dir / ROOTS_FILE, json.dumps(body, indent=2).encode() + b"\n", mode=0o600)

    def _new_root(self, now: datetime, *, activate_at: datetime, overlap: timedelta) -> _Record:
        cert, key = make_root(self.trust_domain, now)
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        record = _Record(ski.hex()[:16], now, activate_at, overlap)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # The key first: a root whose key is missing must never be listed in roots.json.
        _write_new(self.ca_dir / f"root-{record.id}-key.pem", key_pem, mode=0o600)
        _write_new(self.ca_dir / f"root-{record.id}.pem", cert_pem(cert).encode(), mode=0o644)
        return record

    def _load_roots(self, records: list[_Record] | None) -> tuple[_Root, ...]:
        if not records:
            # Never silently start over with a new root: every workload would lose trust.
            raise KeyStoreError(f"{self.ca_dir / ROOTS_FILE} is missing or lists no roots")
        known = {r.record.id: r for r in self._roots}
        return tuple(known.get(rec.id) or self._load_root(rec) for rec in records)

    def _load_root(self, record: _Record) -> _Root:
        cert_path = self.ca_dir / f"root-{record.id}.pem"
        key_path = self.ca_dir / f"root-{record.id}-key.pem"
        try:
            mode = key_path.stat().st_mode & 0o777
            if mode & 0o077:
                raise KeyStoreError(f"{key_path} has mode {mode:o}, open to group or others; chmod 600 it")
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            signer = SigningCA(cert, key)  # type: ignore[arg-type]  # SigningCA checks the type
        except (OSError, ValueError, TypeError, AuthorityError) as e:
            raise KeyStoreError(f"root {record.id} in {self.ca_dir} cannot be loaded: {e}") from None
        return _Root(record, signer, cert_pem(cert))


# --- the timeline, a pure function of the records and `now` ---------------------------------------


def _active_index(roots: tuple[_Root, ...], now: datetime) -> int:
    # The root activated last signs. Before the first root's activate_at (a clock stepped back
    # after first start) the first root still signs: refusing would stop the whole mesh.
    active = 0
    for i, r in enumerate(roots):
        if r.record.activate_at <= now:
            active = i
    return active


def _timeline(roots: tuple[_Root, ...], now: datetime) -> list[RootStatus]:
    # Records are kept in activation order: a rotation is refused while one is pending, so each
    # new root activates after every root before it.
    active = _active_index(roots, now)
    out: list[RootStatus] = []
    for i, root in enumerate(roots):
        state, retire_at = RootState.ACTIVE, None
        if i > active:
            state = RootState.PENDING
        elif i < active:
            successor = roots[i + 1].record
            retire_at = successor.activate_at + successor.overlap
            state = RootState.RETIRING if now < retire_at else RootState.RETIRED
        out.append(RootStatus(root.record.id, state, root.record.activate_at, retire_at, root.signer.not_after))
    return out


# --- plugged-in cacerts --------------------------------------------------------------------------


def _load_plugged(directory: Path, now: datetime) -> _Plugged:
    missing = [name for name in PLUGGED_FILES if not (directory / name).is_file()]
    if missing:
        needed = ", ".join(PLUGGED_FILES)
        raise KeyStoreError(f"cacerts directory {directory} lacks {', '.join(missing)} (it needs {needed})")
    ca_certs = _read_certs(directory / "ca-cert.pem")
    if len(ca_certs) != 1:
        raise KeyStoreError(f"{directory}/ca-cert.pem must hold one certificate, not {len(ca_certs)}")
    ca_cert = ca_certs[0]
    key = _read_key(directory / "ca-key.pem")
    if key.public_key() != ca_cert.public_key():
        raise KeyStoreError(f"{directory}/ca-key.pem is not the key of ca-cert.pem")
    roots = _read_certs(directory / "root-cert.pem")
    if not roots:
        raise KeyStoreError(f"{directory}/root-cert.pem holds no certificate")
    for root in roots:
        if not _issued_by(root, root):
            raise KeyStoreError(f"{directory}/root-cert.pem: {_name(root)} is not self-signed")
    path = _path_to_root(directory, ca_cert, _read_certs(directory / "cert-chain.pem"), roots)
    for cert in (ca_cert, *path):
        _check_usable_ca(directory, cert, now)
    top = path[-1] if path else ca_cert
    bundle = (cert_pem(top), *(cert_pem(r) for r in roots if r != top))
    try:
        return _Plugged(SigningCA(ca_cert, key, tuple(path)), bundle)
    except AuthorityError as e:
        raise KeyStoreError(f"{directory}: {e}") from None


def _path_to_root(
    directory: Path, ca_cert: x509.Certificate, chain: list[x509.Certificate], roots: list[x509.Certificate]
) -> list[x509.Certificate]:
    """The certificates above ca-cert up to its root, each checked to have issued the one below."""
    if ca_cert in roots:
        return []  # the plugged-in CA is itself a root: nothing above it
    if chain and chain[0] == ca_cert:
        chain = chain[1:]  # Istio's own samples start cert-chain.pem with ca-cert.pem
    path: list[x509.Certificate] = []
    below = ca_cert
    for cert in chain:
        if not _issued_by(below, cert):
            raise KeyStoreError(
                f"{directory}/cert-chain.pem does not link up: {_name(below)} was not issued by {_name(cert)}"
            )
        path.append(cert)
        below = cert
        if cert in roots:
            return path
    issuer = next((r for r in roots if _issued_by(below, r)), None)
    if issuer is None:
        raise KeyStoreError(
            f"{directory}/cert-chain.pem does not link up to root-cert.pem: no root there issued {_name(below)}"
        )
    return [*path, issuer]


def _check_usable_ca(directory: Path, cert: x509.Certificate, now: datetime) -> None:
    extensions = {type(e.value): e.value for e in cert.extensions}
    if not getattr(extensions.get(x509.BasicConstraints), "ca", False):
        raise KeyStoreError(f"{directory}: {_name(cert)} is not a CA certificate (BasicConstraints CA:TRUE)")
    # RFC 5280 §4.2.1.3: without a KeyUsage extension every usage is allowed.
    if not getattr(extensions.get(x509.KeyUsage), "key_cert_sign", True):
        raise KeyStoreError(f"{directory}: {_name(cert)} lacks the keyCertSign key usage")
    if cert.not_valid_after_utc <= now:
        raise KeyStoreError(f"{directory}: {_name(cert)} expired at {cert.not_valid_after_utc.isoformat()}")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _read_certs(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
        return x509.load_pem_x509_certificates(data) if data.strip() else []
    except (OSError, ValueError, x509.InvalidVersion) as e:
        raise KeyStoreError(f"{path} is not a PEM certificate file: {e}") from None


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise KeyStoreError(f"{path} is not an unencrypted PEM private key: {e}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise KeyStoreError(f"{path}: {type(key).__name__} keys are not supported; use ECDSA or RSA")
    return key


def _name(cert: x509.Certificate) -> str:
    return repr(cert.subject.rfc4514_string() or "<empty subject>")


# --- files ---------------------------------------------------------------------------------------


def _write_new(path: Path, data: bytes, *, mode: int) -> None:
    """Create `path` with `mode` from the first byte; O_EXCL so an existing file is never reused."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Replace `path` whole: write a temporary file beside it, then rename over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        _write_new(tmp, data, mode=mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
