"""istiod's one error type, `ApiError`, and constructors that word errors as the apiserver does.

Every failure a client can see is an `ApiError`; at the HTTP boundary it becomes a Kubernetes
`Status` object whose `code` equals the HTTP status (kubectl and the Python client read both).
"""

from __future__ import annotations

from typing import Any

from mesh.resources.base import Cause
from mesh.resources.kind import InvalidObject, ResourceKind


class ApiError(Exception):
    """A failure with its wire form: HTTP code, Status reason, message and details."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        """The `Status` body (metav1.Status)."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(kind: ResourceKind | None, name: str) -> dict[str, Any]:
    if kind is None:
        return {"name": name}
    return {"name": name, "group": kind.group, "kind": kind.plural}


def not_found(kind: ResourceKind, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{kind.resource} "{name}" not found', _details(kind, name))


def already_exists(kind: ResourceKind, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{kind.resource} "{name}" already exists', _details(kind, name))


def conflict(kind: ResourceKind, name: str, why: str | None = None) -> ApiError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {kind.resource} "{name}": {why}',
        _details(kind, name),
    )


def invalid(kind: ResourceKind, name: str, causes: list[Cause]) -> ApiError:
    """422 Invalid; `details.kind` is the Kind here (not the plural), as the apiserver sends it."""
    err = InvalidObject(kind, name, causes)
    details = {"name": name, "group": kind.group, "kind": kind.kind, "causes": [c.as_dict() for c in causes]}
    return ApiError(422, "Invalid", err.message, details)


def from_invalid(err: InvalidObject) -> ApiError:
    return invalid(err.kind, err.name, err.causes)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def forbidden(user: str, verb: str, kind: ResourceKind | None, namespace: str | None, name: str = "") -> ApiError:
    resource = kind.plural if kind else "resource"
    group = kind.group if kind else ""
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    subject = f'{resource} "{name}"' if name else resource
    message = (
        f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" in API group "{group}" {scope}'
    )
    return ApiError(403, "Forbidden", message, _details(kind, name))


def forbidden_reason(kind: ResourceKind, name: str, why: str) -> ApiError:
    return ApiError(403, "Forbidden", f'{kind.resource} "{name}" is forbidden: {why}', _details(kind, name))


def method_not_allowed(
    message: str = "the server does not allow this method on the requested resource",
) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def unsupported_media_type(message: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def path_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}")


def unavailable(message: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", message)
