"""Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) as JSON objects.

kubectl's typed generators (`kubectl create namespace`, `create serviceaccount`, `create service
...`) send their object as protobuf: the 4-byte magic `k8s\\x00`, then a `runtime.Unknown`
envelope naming the apiVersion and kind, whose `raw` field holds the object encoded as that kind's
message (see proto/k8s/). This module turns such a body into the dict kubectl would have sent as
JSON, so the rest of istiod never sees protobuf. It does no I/O.

How the JSON is shaped, following Go's `encoding/json` on the Kubernetes types:

- field names are the proto field names (they are the JSON names); embedded structs that Go
  inlines (a probe's handler, a key selector's `localObjectReference`, a volume's source) are
  merged into their parent;
- Time becomes RFC 3339 in UTC to the second; IntOrString an int or a str; Quantity its string;
- Go's encoder writes every non-pointer field, zero or not, so a zero scalar, an empty string,
  list, map or message, and a zero Time are left out, as `omitempty` would (a stored object does
  not gain `"generation": 0` or `"clusterIP": ""`); the exception is Go pointer fields
  (`POINTERS`), which are on the wire only when set, so their zero (`automountServiceAccountToken:
  false`) is kept.

A field set on the wire that proto/k8s/ does not model is refused (`UnsupportedProtobuf`) rather
than dropped, as istiod refuses unknown JSON fields; a zero value there is ignored, being what
Go writes for every field the client left unset.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from mesh.proto_gen.k8s import authentication_v1_pb2 as authentication
from mesh.proto_gen.k8s import core_v1_pb2 as core
from mesh.proto_gen.k8s import intstr_pb2, meta_v1_pb2, resource_pb2, runtime_pb2

Json = dict[str, Any]

MAGIC = b"k8s\x00"

KINDS: dict[tuple[str, str], type[Message]] = {
    ("v1", "Namespace"): core.Namespace,
    ("v1", "ServiceAccount"): core.ServiceAccount,
    ("v1", "Service"): core.Service,
    ("v1", "Pod"): core.Pod,
    ("v1", "Node"): core.Node,
    ("v1", "Secret"): core.Secret,  # `kubectl create secret generic|tls`
    ("authentication.k8s.io/v1", "TokenRequest"): authentication.TokenRequest,  # `kubectl create token`
}
"""The kinds whose protobuf form is decoded, by (apiVersion, kind) as named in the envelope."""

INLINE = frozenset({"handler", "localObjectReference", "volumeSource"})
"""Embedded messages whose fields Go's JSON encoder writes into the parent object."""

POINTERS = frozenset(
    {
        "TokenRequestSpec.expirationSeconds",
        "ObjectMeta.deletionGracePeriodSeconds",
        "OwnerReference.controller",
        "OwnerReference.blockOwnerDeletion",
        "ServiceAccount.automountServiceAccountToken",
        "Secret.immutable",
        "ServiceSpec.allocateLoadBalancerNodePorts",
        "ClientIPConfig.timeoutSeconds",
        "PodSpec.terminationGracePeriodSeconds",
        "PodSpec.activeDeadlineSeconds",
        "PodSpec.automountServiceAccountToken",
        "PodSpec.shareProcessNamespace",
        "PodSpec.priority",
        "PodSpec.enableServiceLinks",
        "PodSpec.setHostnameAsFQDN",
        "PodSpec.hostUsers",
        "Probe.terminationGracePeriodSeconds",
        "ConfigMapKeySelector.optional",
        "SecretKeySelector.optional",
        "ConfigMapEnvSource.optional",
        "SecretEnvSource.optional",
        "SecurityContext.privileged",
        "SecurityContext.runAsUser",
        "SecurityContext.runAsGroup",
        "SecurityContext.runAsNonRoot",
        "SecurityContext.readOnlyRootFilesystem",
        "SecurityContext.allowPrivilegeEscalation",
        "PodSecurityContext.runAsUser",
        "PodSecurityContext.runAsGroup",
        "PodSecurityContext.runAsNonRoot",
        "PodSecurityContext.fsGroup",
        "Toleration.tolerationSeconds",
        "TopologySpreadConstraint.minDomains",
        "SecretVolumeSource.defaultMode",
        "SecretVolumeSource.optional",
        "ConfigMapVolumeSource.defaultMode",
        "ConfigMapVolumeSource.optional",
        "DownwardAPIVolumeSource.defaultMode",
        "DownwardAPIVolumeFile.mode",
        "KeyToPath.mode",
        "ContainerStatus.started",
    }
)
"""Fields that are Go pointers (`Message.field`): present on the wire means set, even to zero."""

_TIME = meta_v1_pb2.Time.DESCRIPTOR.full_name
_INT_OR_STRING = intstr_pb2.IntOrString.DESCRIPTOR.full_name
_QUANTITY = resource_pb2.Quantity.DESCRIPTOR.full_name
_GO_ZERO_TIME = -62135596800  # time.Time{}.Unix(): 0001-01-01T00:00:00Z


class ProtobufError(ValueError):
    """The body is not a well-formed Kubernetes protobuf object (the caller answers 400)."""


class UnsupportedProtobuf(ValueError):
    """Well-formed, but of a kind or with a field that is not decoded here (the caller answers 415)."""


def decode_k8s_protobuf(raw: bytes) -> Json:
    """The object in a Kubernetes protobuf body, as the JSON object kubectl would have sent."""
    if not raw.startswith(MAGIC):
        raise ProtobufError("the protobuf body does not start with the Kubernetes magic prefix k8s\\x00")
    envelope = _parse(runtime_pb2.Unknown, raw[len(MAGIC) :], "the protobuf envelope")
    _refuse_unknown_fields(envelope, "the envelope")
    api_version = _scalar(envelope.typeMeta.apiVersion, "the envelope's apiVersion")
    kind = _scalar(envelope.typeMeta.kind, "the envelope's kind")
    if not api_version or not kind:
        raise ProtobufError("the protobuf envelope does not name the object's apiVersion and kind")
    if envelope.contentEncoding:
        raise UnsupportedProtobuf(f"protobuf content encoding {envelope.contentEncoding!r} is not supported")
    if envelope.contentType not in ("", "application/vnd.kubernetes.protobuf"):
        raise UnsupportedProtobuf(f"a protobuf envelope holding {envelope.contentType!r} is not supported")
    message_type = KINDS.get((api_version, kind))
    if message_type is None:
        raise UnsupportedProtobuf(f"protobuf bodies of {kind} ({api_version}) are not decoded")
    obj = _parse(message_type, envelope.raw, f"the {kind}")
    body: Json = {"apiVersion": api_version, "kind": kind}
    try:
        body.update(_message(obj, ""))
    except UnicodeDecodeError:  # upb decodes map keys as it iterates them
        raise ProtobufError(f"the {kind} holds a string that is not valid UTF-8") from None
    body.setdefault("metadata", {})
    return body


def _parse(message_type: type[Message], data: bytes, what: str) -> Any:
    message = message_type()
    try:
        message.ParseFromString(data)
    except DecodeError as e:
        raise ProtobufError(f"{what} is not valid protobuf: {e}") from None
    return message


def _message(message: Message, path: str) -> Json:
    """A message as a JSON object, leaving out what `omitempty` would."""
    _refuse_unknown_fields(message, path or "the object")
    owner = message.DESCRIPTOR.name
    out: Json = {}
    for field, value in message.ListFields():
        where = f"{path}.{field.name}" if path else field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            converted = _map(field, value, where)
        elif field.is_repeated:
            converted = [_element(field, item, f"{where}[{i}]") for i, item in enumerate(value)]
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            converted = _single_message(field, value, where)
            if field.name in INLINE and isinstance(converted, dict):
                out.update(converted)
                continue
        else:
            converted = _scalar(value, where) if value or f"{owner}.{field.name}" in POINTERS else None
        if converted not in (None, "", [], {}):
            out[field.name] = converted
    return out


def _element(field: FieldDescriptor, value: Any, path: str) -> Any:
    """An item of a repeated field: kept even when empty, so that list positions stay."""
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()  # Go's encoding/json writes []byte as base64
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return _scalar(value, path)
    return _single_message(field, value, path, keep_empty=True)


def _map(field: FieldDescriptor, value: Any, path: str) -> Json:
    value_field = field.message_type.fields_by_name["value"]
    return {_scalar(key, path): _element(value_field, item, f"{path}[{key!r}]") for key, item in value.items()}


def _single_message(field: FieldDescriptor, value: Any, path: str, *, keep_empty: bool = False) -> Any:
    """A message-typed value: the special JSON forms of Time, IntOrString and Quantity, or an object."""
    name = field.message_type.full_name
    if name == _TIME:
        _refuse_unknown_fields(value, path)
        return _time(value, path)
    if name == _INT_OR_STRING:
        _refuse_unknown_fields(value, path)
        if value.type == 1:
            return _scalar(value.strVal, path)
        return value.intVal or None
    if name == _QUANTITY:
        _refuse_unknown_fields(value, path)
        return _scalar(value.string, path) or None
    converted = _message(value, path)
    return converted if converted or keep_empty else None


def _scalar(value: Any, path: str) -> Any:
    """A scalar as is; a proto2 string that is not UTF-8 arrives as bytes and is refused."""
    if isinstance(value, bytes):
        raise ProtobufError(f"{path}: a string field holds bytes that are not valid UTF-8")
    return value


def _time(value: Any, path: str) -> str | None:
    """metav1.Time in its JSON form, RFC 3339 in UTC; None for the zero time."""
    if value.seconds in (0, _GO_ZERO_TIME) and not value.nanos:
        return None
    try:
        when = datetime.fromtimestamp(value.seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise ProtobufError(f"{path}: {value.seconds} seconds is not a valid time") from None
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _refuse_unknown_fields(message: Message, path: str) -> None:
    """Refuse a field set on the wire that proto/k8s/ does not model; zero values are ignored."""
    for unknown in UnknownFieldSet(message):
        data = unknown.data
        if isinstance(data, int | bytes) and not data:
            continue
        raise UnsupportedProtobuf(
            f"{path}: field number {unknown.field_number} of {message.DESCRIPTOR.name} is set, "
            "and istiod does not decode it from protobuf"
        )
