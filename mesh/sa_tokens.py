"""A pod's service-account token: asking istiod for it (the TokenRequest API), keeping it on disk.

mesh-runtime asks with its node token for each pod it starts, as the kubelet does for a projected
service-account token, and the pod's processes hand the token to mesh-ca (docs/waypoint.md,
"Identity"). The integration tests call the same function.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mesh.kubeclient import SERVICE_ACCOUNTS, KubeClient
from mesh.tokens import AUD_ISTIO_CA

Json = dict[str, Any]
DEFAULT_SECONDS = 3600
REFRESH_FRACTION = 0.8  # renew at 80 % of the lifetime, as the kubelet does for projected tokens


class TokenRequestError(Exception):
    """istiod's answer was not a usable TokenRequest."""


@dataclass(frozen=True)
class PodToken:
    """A token and its lifetime (`issued_at` by the local clock when it was asked for)."""

    token: str
    issued_at: datetime
    expires_at: datetime

    def refresh_at(self, fraction: float = REFRESH_FRACTION) -> datetime:
        """When to ask for the next one."""
        return self.issued_at + (self.expires_at - self.issued_at) * fraction


def token_request(
    pod_name: str,
    pod_uid: str,
    audiences: tuple[str, ...] = (AUD_ISTIO_CA,),
    expiration_seconds: int = DEFAULT_SECONDS,
) -> Json:
    """The TokenRequest body for a token bound to a pod."""
    return {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": list(audiences),
            "expirationSeconds": expiration_seconds,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod_name, "uid": pod_uid},
        },
    }


def parse_answer(answer: Json, issued_at: datetime) -> PodToken:
    """The token and its expiry from a TokenRequest answer."""
    status = answer.get("status") or {}
    token, expiry = status.get("token"), status.get("expirationTimestamp")
    if not isinstance(token, str) or not token or not isinstance(expiry, str):
        raise TokenRequestError("the TokenRequest answer has no status.token or status.expirationTimestamp")
    try:
        expires_at = datetime.strptime(expiry, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise TokenRequestError(f"status.expirationTimestamp {expiry!r} is not RFC 3339") from None
    if expires_at <= issued_at:
        raise TokenRequestError(f"the token expired already ({expiry})")
    return PodToken(token, issued_at, expires_at)


async def request_pod_token(
    client: KubeClient,
    namespace: str,
    service_account: str,
    pod_name: str,
    pod_uid: str,
    *,
    audiences: tuple[str, ...] = (AUD_ISTIO_CA,),
    expiration_seconds: int = DEFAULT_SECONDS,
) -> PodToken:
    """Ask istiod for the pod's token. Raises `ApiStatusError` (refused), `TokenRequestError`, or
    an httpx error (istiod unreachable)."""
    issued_at = datetime.now(UTC)
    body = token_request(pod_name, pod_uid, audiences, expiration_seconds)
    answer = await client.create_subresource(SERVICE_ACCOUNTS, service_account, "token", body, namespace)
    return parse_answer(answer, issued_at - timedelta(seconds=1))


def write_token(path: Path, token: str) -> None:
    """Replace the token file atomically, mode 0600 from the moment it exists."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
