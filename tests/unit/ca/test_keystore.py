"""Unit tests for services.ca.keystore: the self-signed root on disk, its rotation timeline
(driven by the `now` each call passes), and plugged-in cacerts with every misconfiguration.

These touch the filesystem (a pytest tmp_path) but nothing else.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from services.ca import keystore as keystore_module
from services.ca.authority import issue, make_root
from services.ca.csr_checks import check_csr
from services.ca.keystore import KeyStore, KeyStoreError, RootState
from tests.unit.ca.test_authority import load, make_intermediate
from tests.unit.ca.test_csr_checks import csr_pem

pytestmark = pytest.mark.unit

TD = "cluster.local"
NOW = dt.datetime(2030, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key) -> bytes:  # any private key type
    encoding, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    return key.private_bytes(encoding, pkcs8, serialization.NoEncryption())


def key_files(ca_dir: Path) -> list[Path]:
    return sorted(ca_dir.glob("root-*-key.pem"))


# --- self-signed mode: first start and restarts -------------------------------------------------


def test_first_start_generates_and_persists(tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path, TD, now=NOW)
    ca_dir = tmp_path / "ca"
    assert mode(ca_dir) == 0o700
    (key_file,) = key_files(ca_dir)
    assert mode(key_file) == 0o600
    assert mode(ca_dir / "roots.json") == 0o600
    assert not store.plugged
    signer = store.signing(NOW)
    assert signer.cert.subject.rfc4514_string() == "O=cluster.local"
    assert signer.chain == ()
    assert store.trust_bundle(NOW) == [signer.cert.public_bytes(serialization.Encoding.PEM).decode()]
    (status,) = store.roots(NOW)
    assert status.state is RootState.ACTIVE
    assert status.retire_at is None
    saved = json.loads((ca_dir / "roots.json").read_text())
    assert saved["version"] == 1 and saved["trust_domain"] == TD
    assert [r["id"] for r in saved["roots"]] == [status.id]
    assert (ca_dir / f"root-{status.id}.pem").read_bytes() == pem(signer.cert)


def test_key_is_created_0600_from_the_first_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key file is created by os.open with O_EXCL and mode 0600, not chmod'ed afterwards."""
    opened: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *args, **kwargs):  # os.open's signature
        opened.append((str(path), flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(keystore_module.os, "open", spy)
    old_umask = os.umask(0)  # with no umask to help, the mode must come from the call itself
    try:
        KeyStore.open(tmp_path, TD, now=NOW)
    finally:
        os.umask(old_umask)
    (key_file,) = key_files(tmp_path / "ca")
    assert mode(key_file) == 0o600
    (call,) = [c for c in opened if c[0] == str(key_file)]
    assert call[1] & os.O_CREAT and call[1] & os.O_EXCL
    assert call[2] == 0o600
    assert mode(tmp_path / "ca") == 0o700


def test_second_start_loads_the_same_root(tmp_path: Path) -> None:
    first = KeyStore.open(tmp_path, TD, now=NOW)
    files = {p.name: p.read_bytes() for p in (tmp_path / "ca").iterdir()}
    second = KeyStore.open(tmp_path, TD, now=NOW + 30 * DAY)
    assert second.signing(NOW + 30 * DAY).cert == first.signing(NOW).cert
    assert second.trust_bundle(NOW + 30 * DAY) == first.trust_bundle(NOW)
    assert {p.name: p.read_bytes() for p in (tmp_path / "ca").iterdir()} == files


def test_existing_ca_dir_is_tightened_to_0700(tmp_path: Path) -> None:
    (tmp_path / "ca").mkdir(mode=0o755)
    os.chmod(tmp_path / "ca", 0o755)
    KeyStore.open(tmp_path, TD, now=NOW)
    assert mode(tmp_path / "ca") == 0o700


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    KeyStore.open(tmp_path, TD, now=NOW)
    (key_file,) = key_files(tmp_path / "ca")
    key_file.chmod(0o644)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        KeyStore.open(tmp_path, TD, now=NOW)


def test_other_trust_domain_is_refused(tmp_path: Path) -> None:
    KeyStore.open(tmp_path, TD, now=NOW)
    with pytest.raises(KeyStoreError, match=re.escape("trust domain 'cluster.local', not 'example.org'")):
        KeyStore.open(tmp_path, "example.org", now=NOW)


@pytest.mark.parametrize(
    "content",
    ["not json", "[]", '{"trust_domain": "cluster.local"}', '{"trust_domain": "cluster.local", "roots": []}'],
)
def test_damaged_roots_json_is_refused(tmp_path: Path, content: str) -> None:
    KeyStore.open(tmp_path, TD, now=NOW)
    (tmp_path / "ca" / "roots.json").write_text(content)
    with pytest.raises(KeyStoreError, match=r"roots\.json"):
        KeyStore.open(tmp_path, TD, now=NOW)


def test_root_id_cannot_name_another_path(tmp_path: Path) -> None:
    KeyStore.open(tmp_path, TD, now=NOW)
    path = tmp_path / "ca" / "roots.json"
    saved = json.loads(path.read_text())
    saved["roots"][0]["id"] = "../../etc/passwd"
    path.write_text(json.dumps(saved))
    with pytest.raises(KeyStoreError, match="16 hex digits"):
        KeyStore.open(tmp_path, TD, now=NOW)


def test_missing_key_file_is_refused(tmp_path: Path) -> None:
    KeyStore.open(tmp_path, TD, now=NOW)
    key_files(tmp_path / "ca")[0].unlink()
    with pytest.raises(KeyStoreError, match="cannot be loaded"):
        KeyStore.open(tmp_path, TD, now=NOW)


def test_a_stepped_back_clock_still_signs(tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path, TD, now=NOW)
    assert store.signing(NOW - HOUR).cert == store.signing(NOW).cert


# --- rotation -------------------------------------------------------------------------------------


def test_rotation_timeline(tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path, TD, now=NOW)
    old = store.signing(NOW).cert
    t0 = NOW + HOUR
    status = store.rotate(t0, activate_after=2 * HOUR, max_cert_ttl=DAY)
    assert status.state is RootState.PENDING
    assert status.activate_at == t0 + 2 * HOUR
    old_pem, new_pem = (r.pem for r in store._roots)
    activate = t0 + 2 * HOUR

    # Before activation: the old root signs, the new one is already trusted.
    for when in (t0, activate - dt.timedelta(seconds=1)):
        assert store.signing(when).cert == old
        assert store.trust_bundle(when) == [old_pem, new_pem]
        assert [r.state for r in store.roots(when)] == [RootState.ACTIVE, RootState.PENDING]

    # From activation: the new root signs; the old stays trusted for the longest leaf lifetime.
    for when in (activate, activate + DAY - dt.timedelta(seconds=1)):
        new = store.signing(when).cert
        assert new != old and new.subject == old.subject
        assert store.trust_bundle(when) == [new_pem, old_pem]
        assert [r.state for r in store.roots(when)] == [RootState.RETIRING, RootState.ACTIVE]
    assert store.roots(activate)[0].retire_at == activate + DAY

    # Then it drops out.
    assert store.trust_bundle(activate + DAY) == [new_pem]
    assert [r.state for r in store.roots(activate + DAY)] == [RootState.RETIRED, RootState.ACTIVE]


def test_leaves_of_the_old_root_expire_before_it_leaves_the_bundle(tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path, TD, now=NOW)
    store.rotate(NOW, activate_after=HOUR, max_cert_ttl=DAY)
    last_moment = NOW + HOUR - dt.timedelta(seconds=1)
    chain = issue(store.signing(last_moment), check_csr(csr_pem(), TD), int(DAY.total_seconds()), last_moment)
    leaf, root = load(chain)
    retire_at = store.roots(NOW + HOUR)[0].retire_at
    assert retire_at is not None and leaf.not_valid_after_utc <= retire_at
    assert root.public_bytes(serialization.Encoding.PEM).decode() in store.trust_bundle(retire_at - HOUR)


def test_rotation_is_persisted_and_seen_by_a_new_instance(tmp_path: Path) -> None:
    KeyStore.open(tmp_path, TD, now=NOW).rotate(NOW, activate_after=HOUR)
    reopened = KeyStore.open(tmp_path, TD, now=NOW)
    assert [r.state for r in reopened.roots(NOW)] == [RootState.ACTIVE, RootState.PENDING]
    assert len(key_files(tmp_path / "ca")) == 2
    assert all(mode(p) == 0o600 for p in key_files(tmp_path / "ca"))
    saved = json.loads((tmp_path / "ca" / "roots.json").read_text())
    assert saved["roots"][1]["activate_at"] == (NOW + HOUR).isoformat()
    assert saved["roots"][1]["overlap_seconds"] == 86400


def test_reload_sees_a_rotation_by_another_instance(tmp_path: Path) -> None:
    serving = KeyStore.open(tmp_path, TD, now=NOW)
    cli = KeyStore.open(tmp_path, TD, now=NOW)
    cli.rotate(NOW, activate_after=HOUR)
    assert len(serving.trust_bundle(NOW)) == 1  # not until it reloads
    serving.reload()
    assert serving.trust_bundle(NOW) == cli.trust_bundle(NOW)
    assert len(serving.trust_bundle(NOW)) == 2
    assert serving.signing(NOW + HOUR).cert == cli.signing(NOW + HOUR).cert != serving.signing(NOW).cert


def test_rotation_refused_while_one_is_pending(tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path, TD, now=NOW)
    store.rotate(NOW, activate_after=HOUR)
    with pytest.raises(KeyStoreError, match="already pending"):
        store.rotate(NOW + HOUR / 2, activate_after=HOUR)
    store.rotate(NOW + HOUR, activate_after=HOUR)  # once it has activated, the next may start


def test_rotation_sees_a_pending_root_written_by_another_instance(tmp_path: Path) -> None:
    first = KeyStore.open(tmp_path, TD, now=NOW)
    KeyStore.open(tmp_path, TD, now=NOW).rotate(NOW, activate_after=HOUR)
    with pytest.raises(KeyStoreError, match="already pending"):
        first.rotate(NOW, activate_after=HOUR)


@pytest.mark.parametrize(("activate_after", "max_cert_ttl"), [(-HOUR, DAY), (HOUR, dt.timedelta(0)), (HOUR, -DAY)])
def test_rotation_refuses_nonsense_durations(
    tmp_path: Path, activate_after: dt.timedelta, max_cert_ttl: dt.timedelta
) -> None:
    store = KeyStore.open(tmp_path, TD, now=NOW)
    with pytest.raises(KeyStoreError, match="activate_after"):
        store.rotate(NOW, activate_after=activate_after, max_cert_ttl=max_cert_ttl)


def test_immediate_rotation(tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path, TD, now=NOW)
    old = store.signing(NOW).cert
    store.rotate(NOW, activate_after=dt.timedelta(0))
    assert store.signing(NOW).cert != old
    assert len(store.trust_bundle(NOW)) == 2


def test_retired_roots_are_deleted_at_the_next_rotation(tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path, TD, now=NOW)
    first_id = store.roots(NOW)[0].id
    store.rotate(NOW, activate_after=HOUR, max_cert_ttl=DAY)
    later = NOW + HOUR + DAY
    store.rotate(later, activate_after=HOUR)
    ids = [r.id for r in store.roots(later)]
    assert first_id not in ids and len(ids) == 2
    assert not list((tmp_path / "ca").glob(f"root-{first_id}*"))
    assert [r["id"] for r in json.loads((tmp_path / "ca" / "roots.json").read_text())["roots"]] == ids


def test_three_generations(tmp_path: Path) -> None:
    """A → B → C with overlaps that cross: each root keeps its own retirement time."""
    store = KeyStore.open(tmp_path, TD, now=NOW)
    store.rotate(NOW, activate_after=HOUR, max_cert_ttl=DAY)  # B active at +1h, A retires at +25h
    store.rotate(NOW + 2 * HOUR, activate_after=HOUR, max_cert_ttl=HOUR)  # C at +3h, B retires at +4h
    states = [r.state for r in store.roots(NOW + 5 * HOUR)]
    assert states == [RootState.RETIRING, RootState.RETIRED, RootState.ACTIVE]
    assert len(store.trust_bundle(NOW + 5 * HOUR)) == 2
    assert len(store.trust_bundle(NOW + 25 * HOUR)) == 1


def test_write_bundle_is_atomic_and_complete(tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path, TD, now=NOW)
    store.rotate(NOW, activate_after=HOUR)
    target = tmp_path / "root-cert.pem"
    target.write_text("stale")
    store.write_bundle(target, NOW)
    assert target.read_text() == "".join(store.trust_bundle(NOW))
    assert len(x509.load_pem_x509_certificates(target.read_bytes())) == 2
    assert mode(target) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca", "root-cert.pem"]  # no temporary left


def test_write_bundle_defaults_to_the_clock(tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path, TD)
    store.write_bundle(tmp_path / "bundle.pem")
    assert (tmp_path / "bundle.pem").read_text() == store.trust_bundle(dt.datetime.now(dt.UTC))[0]


# --- plugged mode ---------------------------------------------------------------------------------


def external_pki() -> dict[str, object]:
    """An external root with two intermediates below it: root → i1 → i2."""
    root, root_key = make_root("external-root", NOW, days=3650)
    i1, i1_key = make_intermediate(root, root_key, "intermediate-1", NOW, days=1000)
    i2, i2_key = make_intermediate(i1, i1_key, "intermediate-2", NOW, days=500)
    return {"root": root, "root_key": root_key, "i1": i1, "i1_key": i1_key, "i2": i2, "i2_key": i2_key}


def write_cacerts(directory: Path, *, ca_cert: bytes, ca_key: bytes, root_cert: bytes, cert_chain: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in {
        "ca-cert.pem": ca_cert,
        "ca-key.pem": ca_key,
        "root-cert.pem": root_cert,
        "cert-chain.pem": cert_chain,
    }.items():
        (directory / name).write_bytes(data)
    return directory


@pytest.fixture(scope="module")
def pki() -> dict[str, object]:
    return external_pki()


def istio_layout(tmp_path: Path, pki: dict, **override: bytes) -> Path:
    """cacerts for signing as i2, with Istio's cert-chain.pem (ca-cert first, root last)."""
    files = {
        "ca_cert": pem(pki["i2"]),
        "ca_key": key_pem(pki["i2_key"]),
        "root_cert": pem(pki["root"]),
        "cert_chain": pem(pki["i2"], pki["i1"], pki["root"]),
    }
    return write_cacerts(tmp_path / "cacerts", **{**files, **override})


def test_plugged_mode_signs_as_the_intermediate(tmp_path: Path, pki: dict) -> None:
    store = KeyStore.open(tmp_path / "state", TD, cacerts_dir=istio_layout(tmp_path, pki), now=NOW)
    assert store.plugged
    signer = store.signing(NOW)
    assert signer.cert == pki["i2"]
    assert signer.chain == (pki["i1"], pki["root"])
    assert store.trust_bundle(NOW) == [pem(pki["root"]).decode()]
    leaf, *rest = load(issue(signer, check_csr(csr_pem(), TD), 3600, NOW))
    assert rest == [pki["i2"], pki["i1"], pki["root"]]
    assert leaf.issuer == pki["i2"].subject
    assert store.roots(NOW) == []
    assert not (tmp_path / "state" / "ca").exists()  # nothing of its own is generated


@pytest.mark.parametrize(
    ("name", "chain"),
    [
        ("starts with ca-cert, root last", ("i2", "i1", "root")),
        ("starts with the issuer", ("i1", "root")),
        ("stops below the root", ("i1",)),
        ("ca-cert only, then the issuer is missing", ("i2", "i1")),
    ],
)
def test_plugged_cert_chain_variants(tmp_path: Path, pki: dict, name: str, chain: tuple[str, ...]) -> None:
    cacerts = istio_layout(tmp_path, pki, cert_chain=pem(*(pki[c] for c in chain)))
    assert KeyStore.open(tmp_path, TD, cacerts_dir=cacerts, now=NOW).signing(NOW).chain == (pki["i1"], pki["root"])


def test_plugged_one_level_intermediate_with_empty_chain(tmp_path: Path, pki: dict) -> None:
    cacerts = istio_layout(tmp_path, pki, ca_cert=pem(pki["i1"]), ca_key=key_pem(pki["i1_key"]), cert_chain=b"")
    assert KeyStore.open(tmp_path, TD, cacerts_dir=cacerts, now=NOW).signing(NOW).chain == (pki["root"],)


def test_plugged_root_signs_directly(tmp_path: Path, pki: dict) -> None:
    cacerts = istio_layout(
        tmp_path, pki, ca_cert=pem(pki["root"]), ca_key=key_pem(pki["root_key"]), cert_chain=pem(pki["root"])
    )
    signer = KeyStore.open(tmp_path, TD, cacerts_dir=cacerts, now=NOW).signing(NOW)
    assert signer.cert == pki["root"] and signer.chain == ()


def test_plugged_root_cert_with_several_roots(tmp_path: Path, pki: dict) -> None:
    other, _ = make_root("other-root", NOW)
    cacerts = istio_layout(tmp_path, pki, root_cert=pem(other, pki["root"]))
    store = KeyStore.open(tmp_path, TD, cacerts_dir=cacerts, now=NOW)
    assert store.trust_bundle(NOW) == [pem(pki["root"]).decode(), pem(other).decode()]


def test_plugged_reload_picks_up_new_files_and_keeps_old_on_error(tmp_path: Path, pki: dict) -> None:
    cacerts = istio_layout(tmp_path, pki)
    store = KeyStore.open(tmp_path, TD, cacerts_dir=cacerts, now=NOW)
    istio_layout(tmp_path, pki, ca_cert=pem(pki["i1"]), ca_key=key_pem(pki["i1_key"]), cert_chain=pem(pki["root"]))
    store.reload(NOW)
    assert store.signing(NOW).cert == pki["i1"]
    (cacerts / "ca-key.pem").write_bytes(key_pem(pki["i2_key"]))
    with pytest.raises(KeyStoreError):
        store.reload(NOW)
    assert store.signing(NOW).cert == pki["i1"]


def test_plugged_rotation_refused(tmp_path: Path, pki: dict) -> None:
    store = KeyStore.open(tmp_path, TD, cacerts_dir=istio_layout(tmp_path, pki), now=NOW)
    with pytest.raises(KeyStoreError, match="replacing the files"):
        store.rotate(NOW, activate_after=HOUR)


def _signing_as(cert: x509.Certificate, key, chain: tuple[x509.Certificate, ...]) -> dict[str, bytes]:
    return {"ca_cert": pem(cert), "ca_key": key_pem(key), "cert_chain": pem(*chain)}


def _not_a_ca(p: dict) -> dict[str, bytes]:
    cert, key = make_intermediate(p["i2"], p["i2_key"], "a-leaf", NOW, ca=False)
    return _signing_as(cert, key, (p["i2"], p["i1"]))


def _no_cert_sign(p: dict) -> dict[str, bytes]:
    cert, key = make_intermediate(p["i1"], p["i1_key"], "no-keycertsign", NOW, key_cert_sign=False)
    return _signing_as(cert, key, (p["i1"],))


def _encrypted(key) -> bytes:  # any private key type
    encoding, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    return key.private_bytes(encoding, pkcs8, serialization.BestAvailableEncryption(b"pw"))


MISCONFIGURED = {
    "ca-key does not match ca-cert": (lambda p: {"ca_key": key_pem(p["i1_key"])}, "not the key of ca-cert"),
    "ca-key is garbage": (lambda p: {"ca_key": b"nope"}, "not an unencrypted PEM private key"),
    "ca-key is encrypted": (lambda p: {"ca_key": _encrypted(p["i2_key"])}, "not an unencrypted PEM private key"),
    "ca-key is Ed25519": (
        lambda p: {"ca_key": key_pem(ed25519.Ed25519PrivateKey.generate())},
        "keys are not supported",
    ),
    "ca-cert is garbage": (lambda p: {"ca_cert": b"nope"}, "not a PEM certificate file"),
    "ca-cert holds two certificates": (lambda p: {"ca_cert": pem(p["i2"], p["i1"])}, "must hold one certificate"),
    "ca-cert is not a CA": (_not_a_ca, "is not a CA certificate"),
    "ca-cert lacks keyCertSign": (_no_cert_sign, "keyCertSign"),
    "root-cert is not self-signed": (lambda p: {"root_cert": pem(p["i1"])}, "is not self-signed"),
    "root-cert is empty": (lambda p: {"root_cert": b""}, "holds no certificate"),
    "cert-chain is garbage": (lambda p: {"cert_chain": b"nope"}, "not a PEM certificate file"),
    "cert-chain skips a link": (lambda p: {"cert_chain": pem(p["root"])}, "was not issued by"),
    "cert-chain in the wrong order": (lambda p: {"cert_chain": pem(p["root"], p["i1"])}, "was not issued by"),
    "cert-chain from another PKI": (lambda p: {"cert_chain": pem(external_pki()["i1"])}, "was not issued by"),
    "cert-chain empty and ca-cert two levels below": (lambda p: {"cert_chain": b""}, "does not link up to root-cert"),
    "root-cert is another root": (
        lambda p: {"root_cert": pem(external_pki()["root"]), "cert_chain": pem(p["i1"])},
        "does not link up to root-cert",
    ),
}


@pytest.mark.parametrize("case", list(MISCONFIGURED))
def test_plugged_misconfiguration_is_refused(tmp_path: Path, pki: dict, case: str) -> None:
    override, fragment = MISCONFIGURED[case]
    cacerts = istio_layout(tmp_path, pki, **override(pki))
    with pytest.raises(KeyStoreError, match=fragment):
        KeyStore.open(tmp_path, TD, cacerts_dir=cacerts, now=NOW)


@pytest.mark.parametrize("missing", ["ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"])
def test_plugged_missing_file_is_refused(tmp_path: Path, pki: dict, missing: str) -> None:
    cacerts = istio_layout(tmp_path, pki)
    (cacerts / missing).unlink()
    with pytest.raises(KeyStoreError, match=re.escape(f"lacks {missing}")):
        KeyStore.open(tmp_path, TD, cacerts_dir=cacerts, now=NOW)


def test_plugged_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match=re.escape("lacks ca-cert.pem, ca-key.pem")):
        KeyStore.open(tmp_path, TD, cacerts_dir=tmp_path / "nowhere", now=NOW)


@pytest.mark.parametrize("which", ["i2", "i1", "root"])
def test_plugged_expired_certificate_is_refused(tmp_path: Path, which: str) -> None:
    """Whichever certificate on the path has expired is named."""
    days = {"root": 3650, "i1": 1000, "i2": 500, which: 10}
    root, root_key = make_root("external-root", NOW, days=days["root"])
    i1, i1_key = make_intermediate(root, root_key, "intermediate-1", NOW, days=days["i1"])
    i2, i2_key = make_intermediate(i1, i1_key, "intermediate-2", NOW, days=days["i2"])
    cacerts = write_cacerts(
        tmp_path / "cacerts", ca_cert=pem(i2), ca_key=key_pem(i2_key), root_cert=pem(root), cert_chain=pem(i2, i1, root)
    )
    assert KeyStore.open(tmp_path, TD, cacerts_dir=cacerts, now=NOW + 9 * DAY).plugged
    name = {"root": root, "i1": i1, "i2": i2}[which].subject.rfc4514_string()
    with pytest.raises(KeyStoreError, match=re.escape(f"'{name}' expired at")):
        KeyStore.open(tmp_path, TD, cacerts_dir=cacerts, now=NOW + 11 * DAY)
