"""The v1 Secret kind: opaque data and TLS key pairs (the certificates of ingress listeners).

Secret values never leave this module in an error: every cause names the field (`data[tls.key]`)
and what is wrong with it, never the value; pydantic sees `data` and `stringData` as opaque so
its own messages (which quote the input) cannot carry them either.

`stringData` is write-only, as in Kubernetes: on every write its entries are base64-encoded into
`data` (overriding keys of the same name) and the field is dropped, so a stored Secret only has
`data`. A `kubernetes.io/tls` Secret must carry `tls.crt` (PEM certificates) and `tls.key` (a PEM
private key matching the first certificate).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ..base import Cause, forbidden, required
from ..kind import Column, ResourceKind, age, jsonpath
from ..meta import KubeObject

Json = dict[str, Any]

TLS_TYPE = "kubernetes.io/tls"
OPAQUE_TYPE = "Opaque"
TLS_CERT_KEY = "tls.crt"
TLS_PRIVATE_KEY_KEY = "tls.key"
MAX_SECRET_BYTES = 1024 * 1024  # the apiserver's limit on the decoded data of one Secret
REDACTED = '"<secret data redacted>"'  # stands where apimachinery would quote the value

_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


class Secret(KubeObject):
    """A Secret; `data` and `stringData` are checked by `check_secret`, never by pydantic."""

    type: str | None = None
    data: Any = None
    string_data: Any = None
    immutable: bool | None = None


def _key_cause(path: str, key: Any) -> Cause | None:
    # apimachinery's IsConfigMapKey: the key is a file name, so it is checked (and may be shown).
    if not isinstance(key, str) or not key or len(key) > 253 or not _KEY.match(key):
        shown = key if isinstance(key, str) else ""
        return Cause(
            path,
            "FieldValueInvalid",
            f'Invalid value: "{shown}": a valid config key must consist of alphanumeric characters, '
            "'-', '_' or '.' (e.g. 'key.name', or 'KEY_NAME', or 'key-name')",
        )
    if key in (".", "..") or key.startswith(".."):
        return Cause(path, "FieldValueInvalid", f"Invalid value: \"{key}\": must not be '.' or start with '..'")
    return None


def _secret_invalid(path: str, why: str) -> Cause:
    return Cause(path, "FieldValueInvalid", f"Invalid value: {REDACTED}: {why}")


def decoded_data(obj: Json) -> tuple[dict[str, bytes], list[Cause]]:
    """The Secret's data as bytes, `stringData` merged over `data`, and the causes found."""
    out: dict[str, bytes] = {}
    causes: list[Cause] = []
    for field, encoded in (("data", True), ("stringData", False)):
        section = obj.get(field)
        if section is None:
            continue
        if not isinstance(section, dict):
            causes.append(Cause(field, "FieldValueInvalid", "Invalid value: must be a map of keys to strings"))
            continue
        for key, value in section.items():
            path = f"{field}[{key}]" if isinstance(key, str) else field
            cause = _key_cause(path, key)
            if cause is not None:
                causes.append(cause)
                continue
            if not isinstance(value, str):
                causes.append(_secret_invalid(path, "must be a string"))
                continue
            if not encoded:
                out[key] = value.encode()
                continue
            try:
                out[key] = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                causes.append(_secret_invalid(path, "must be base64-encoded (standard alphabet, padded)"))
    return out, causes


def _tls_causes(data: dict[str, bytes], field: str) -> list[Cause]:
    """`kubernetes.io/tls`: both keys present, PEM certificates and a PEM private key that match."""
    cert_path, key_path = f"{field}[{TLS_CERT_KEY}]", f"{field}[{TLS_PRIVATE_KEY_KEY}]"
    causes = [required(p) for p, k in ((cert_path, TLS_CERT_KEY), (key_path, TLS_PRIVATE_KEY_KEY)) if k not in data]
    if causes:
        return causes
    try:
        certs = x509.load_pem_x509_certificates(data[TLS_CERT_KEY])
    except ValueError:
        certs = []
    if not certs:
        causes.append(_secret_invalid(cert_path, "must hold one or more PEM-encoded X.509 certificates"))
    try:
        key = serialization.load_pem_private_key(data[TLS_PRIVATE_KEY_KEY], password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        causes.append(_secret_invalid(key_path, "must hold one unencrypted PEM-encoded private key"))
        return causes
    if certs and certs[0].public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        causes.append(
            _secret_invalid(key_path, f"does not match the public key of the first certificate in {TLS_CERT_KEY}")
        )
    return causes


def check_secret(obj: Json, model: Secret) -> list[Cause]:
    """Keys, encodings, size, and the rules of the `kubernetes.io/tls` type."""
    data, causes = decoded_data(obj)
    if causes:
        return causes
    if sum(len(v) for v in data.values()) > MAX_SECRET_BYTES:
        causes.append(forbidden("data", f"may not be more than {MAX_SECRET_BYTES} bytes"))
    if model.type == TLS_TYPE:
        causes += _tls_causes(data, "data")  # stringData is merged into data, and reported as such
    return causes


def tls_pair_problem(secret: Json) -> str | None:
    """Why `secret` (as stored) is not a usable TLS certificate and key, or None when it is.

    The answer never contains secret material; the reconcile job quotes it in Gateway status.
    """
    if secret.get("type") != TLS_TYPE:
        return f"it is of type {secret.get('type') or OPAQUE_TYPE!r}, not {TLS_TYPE!r}"
    data, causes = decoded_data({"data": secret.get("data") or {}})
    causes += _tls_causes(data, "data") if not causes else []
    if causes:
        return "; ".join(f"{c.field}: {c.message}" for c in causes)
    return None


def _secret_defaults(obj: Json) -> None:
    # As the apiserver: `type` defaults to Opaque, and stringData is folded into data.
    obj["type"] = obj.get("type") or OPAQUE_TYPE
    string_data = obj.pop("stringData", None)
    if string_data:
        data = dict(obj.get("data") or {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(value.encode()).decode()
        obj["data"] = data


def secret_reference(obj: Json) -> Json:
    """What the change stream carries for a Secret: which one changed and at what version, no data
    (and no annotations, which may hold kubectl's last-applied copy of the data)."""
    meta = obj.get("metadata") or {}
    kept = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "labels")
    return {
        "apiVersion": obj.get("apiVersion", "v1"),
        "kind": obj.get("kind", "Secret"),
        "metadata": {k: meta[k] for k in kept if k in meta},
        "type": obj.get("type") or OPAQUE_TYPE,
    }


SECRET = ResourceKind(
    group="",
    version="v1",
    kind="Secret",
    plural="secrets",
    namespaced=True,
    model=Secret,
    columns=(
        Column("Name", jsonpath(".metadata.name"), format="name"),
        Column("Type", jsonpath(".type")),
        # As kubectl's printer: how many keys, never what they hold.
        Column("Data", lambda o: len(o.get("data") or {}), type="integer"),
        age(),
    ),
    check=check_secret,
    defaults=_secret_defaults,
    strategic_merge=True,
    spec_fields=("data", "type", "immutable"),
    field_selectors=("type",),
)
