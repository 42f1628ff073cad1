"""HTTP plumbing shared by the routes: JSON responses, Status errors, bodies, Accept headers."""

from __future__ import annotations

from typing import Any

import orjson
import yaml
from starlette.requests import Request
from starlette.responses import Response

from .. import errors
from . import protobuf

JSON = "application/json"
AGGREGATED_DISCOVERY = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
PROTOBUF = "application/vnd.kubernetes.protobuf"
PROTOBUF_REFUSED = (
    "the body of the request was in an unknown format - accepted media types include: application/json, "
    "application/yaml (kubectl's typed generators send protobuf; use `kubectl apply -f` or `kubectl create -f`)"
)
MAX_BODY = 3 * 1024 * 1024  # the apiserver's request size limit


def json_response(
    body: Any, status: int = 200, *, media_type: str = JSON, warnings: list[str] | None = None
) -> Response:
    """A JSON response; `body` may already be bytes (pre-serialized objects and lists)."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    response = Response(content, status_code=status, media_type=media_type)
    for warning in warnings or []:
        # RFC 7234 warn-code 299 ("miscellaneous persistent warning"), as the apiserver sends it.
        text = warning.replace('"', '\\"').encode("ascii", "backslashreplace").decode()  # headers are ASCII
        response.headers.append("Warning", '299 - "' + text + '"')
    return response


def error_response(err: errors.ApiError) -> Response:
    return json_response(err.status(), err.code)


async def read_body(request: Request) -> Any:
    """The request body as JSON (YAML for server-side apply, Kubernetes protobuf for the core kinds).

    Malformed input is a 400; protobuf of a kind (or with a field) that is not decoded is a 415.
    """
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise errors.ApiError(413, "RequestEntityTooLarge", "the request body is too large")
    if not raw.strip():
        raise errors.bad_request("the request body is empty")
    content_type = request.headers.get("content-type", JSON).split(";")[0].strip().lower()
    if content_type == PROTOBUF:
        # kubectl's typed generators (`create namespace`, `create service ...`): the core kinds decode.
        try:
            return protobuf.decode_k8s_protobuf(raw)
        except protobuf.UnsupportedProtobuf as e:
            raise errors.unsupported_media_type(f"{PROTOBUF_REFUSED}: {e}") from None
        except protobuf.ProtobufError as e:
            raise errors.bad_request(f"the request body could not be decoded: {e}") from None
    try:
        if content_type == "application/apply-patch+yaml":
            return yaml.safe_load(raw)
        return orjson.loads(raw)
    except (orjson.JSONDecodeError, yaml.YAMLError) as e:
        raise errors.bad_request(f"the request body could not be decoded: {str(e).splitlines()[0]}") from None


async def read_optional_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise errors.bad_request(f"the request body could not be decoded: {e}") from None


def wants_table(request: Request) -> bool:
    """kubectl's human-readable `get` asks for `as=Table;g=meta.k8s.io` first."""
    accept = request.headers.get("accept", "")
    first = accept.split(",")[0]
    return "as=Table" in first and "g=meta.k8s.io" in first


def wants_aggregated_discovery(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    first = accept.split(",")[0].replace(" ", "")
    return "as=APIGroupDiscoveryList" in first and "v=v2" in first and "v=v2beta1" not in first


def query_flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("true", "1")


async def read_token_request(request: Request) -> Any:
    """A TokenRequest body: JSON, or protobuf as `kubectl create token` sends it; None when empty
    (the defaults apply)."""
    if not (await request.body()).strip():
        return None
    return await read_body(request)
