"""The Secret kind: stringData folding, TLS checks, and causes that never carry the value."""

from __future__ import annotations

import base64
import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mesh.resources.core.secret import SECRET, secret_reference, tls_pair_problem
from mesh.resources.kind import InvalidObject, check_document


def _pair() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), pem


CERT, KEY = _pair()


def secret(data: dict | None = None, string_data: dict | None = None, type_: str | None = "kubernetes.io/tls") -> dict:
    obj: dict = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"}}
    if type_:
        obj["type"] = type_
    if data is not None:
        obj["data"] = data
    if string_data is not None:
        obj["stringData"] = string_data
    return obj


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def causes(obj: dict) -> list[tuple[str, str]]:
    with pytest.raises(InvalidObject) as info:
        check_document(SECRET, obj)
    return [(c.field, c.message) for c in info.value.causes]


def test_a_good_tls_secret_passes_in_data_or_string_data() -> None:
    check_document(SECRET, secret({"tls.crt": b64(CERT), "tls.key": b64(KEY)}))
    check_document(SECRET, secret({"tls.crt": b64(CERT)}, {"tls.key": KEY.decode()}))
    assert tls_pair_problem(secret({"tls.crt": b64(CERT), "tls.key": b64(KEY)})) is None


def test_tls_problems_name_the_field_never_the_value() -> None:
    marker = KEY.decode().splitlines()[1]
    found = causes(secret({"tls.crt": b64(CERT), "tls.key": b64(b"junk" + KEY[:120])}))
    assert [f for f, _ in found] == ["data[tls.key]"] and marker[:20] not in str(found)
    assert [f for f, _ in causes(secret({"tls.crt": b64(b"nope"), "tls.key": b64(KEY)}))] == ["data[tls.crt]"]
    assert [f for f, _ in causes(secret({"tls.crt": b64(CERT)}))] == ["data[tls.key]"]
    found = causes(secret({"tls.crt": "%%" + b64(KEY)[:30], "tls.key": b64(KEY)}))
    assert found[0][0] == "data[tls.crt]" and b64(KEY)[:30] not in found[0][1]
    found = causes(secret({"tls.crt": 5, "tls.key": b64(KEY)}))
    assert found[0][0] == "data[tls.crt]"
    _, other = _pair()
    assert "does not match" in causes(secret({"tls.crt": b64(CERT), "tls.key": b64(other)}))[0][1]
    assert "Opaque" in (tls_pair_problem(secret({"k": "dg=="}, type_="Opaque")) or "")


def test_keys_are_checked() -> None:
    assert causes(secret({"bad/key": "dg=="}, type_="Opaque"))[0][0] == "data[bad/key]"


def test_defaults_fold_string_data() -> None:
    obj = secret({"a": "YQ=="}, {"b": "b", "a": "z"}, type_=None)
    assert SECRET.defaults is not None
    SECRET.defaults(obj)
    assert obj["type"] == "Opaque" and obj["data"] == {"a": "eg==", "b": "Yg=="} and "stringData" not in obj


def test_the_stream_reference_has_no_data_or_annotations() -> None:
    obj = secret({"tls.crt": b64(CERT), "tls.key": b64(KEY)})
    obj["metadata"] |= {
        "resourceVersion": "7",
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x"},
    }
    ref = secret_reference(obj)
    assert ref == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "namespace": "default", "resourceVersion": "7"},
        "type": "kubernetes.io/tls",
    }
