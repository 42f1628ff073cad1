"""JWT authentication: Envoy's `envoy.filters.http.jwt_authn` (JwtAuthentication) over a Request.

Built once per Listener (`Authenticator(config, clock=...)`): providers' JWKS are parsed then, so
a request only verifies. What Envoy does, and Istio's RequestAuthentication relies on:
- the first `rules` entry whose `match` fits the request gives the requirement; no rule fits →
  nothing is checked;
- a provider reads its token from `from_headers` (value after `value_prefix`), `from_params`,
  `from_cookies`; with none of them configured, from `Authorization: Bearer …` then the
  `access_token` query parameter;
- per token, in Envoy's order: the JWT's form and `alg`; `iss` equal to the provider's `issuer`
  (else "Jwt issuer is not configured", which is how a token of another provider is told apart);
  `exp` / `nbf` with `clock_skew_seconds` (default 60); `aud` against `audiences`; a JWKS key
  matching `kid` and `alg`; the signature;
- `allow_missing` (what Istio emits beside `requires_any`): no token passes without a payload, a
  bad token fails; `allow_missing_or_failed` passes everything, keeping payloads that verified;
- a failure is 401 with the reason as the body and `WWW-Authenticate: Bearer realm="<url>",
  error="invalid_token"`, except a refused audience, which Envoy answers 403.
On success the payload lands in `request.jwt_payload` and in the dynamic metadata under
`payload_in_metadata`, where RBAC `metadata` matchers read claims; with `forward: false` the token
header is removed before the request goes upstream.

`remote_jwks` needs a fetch, which is I/O: the waypoint fetches each URI in `remote_jwks_uris()`
and hands the document to `set_remote_jwks`; until then that provider's tokens fail.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import jwt as pyjwt
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from . import matchers
from .model import DEFAULT_PAYLOAD_KEY, JWT_AUTHN_FILTER, ConfigError, Request
from .routing import compile_route_match

DEFAULT_CLOCK_SKEW_SECONDS = 60
_SUPPORTED_ALGS = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


class JwtStatus(enum.Enum):
    """A token check's outcome; the values are Envoy's status strings (the 401 body)."""

    OK = "OK"
    MISSING = "Jwt is missing"
    MALFORMED = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
    BAD_ALG = "Jwt header [alg] is not supported"
    UNKNOWN_ISSUER = "Jwt issuer is not configured"
    EXPIRED = "Jwt is expired"
    NOT_YET_VALID = "Jwt not yet valid"
    NO_EXPIRATION = "Jwt doesn't have expiration"
    AUDIENCE = "Audiences in Jwt are not allowed"
    JWKS_UNAVAILABLE = "Jwks remote fetch is failed"
    NO_KEY = "Jwks doesn't have key to match kid or alg from Jwt"
    BAD_SIGNATURE = "Jwt verification fails"


# When requires_any fails everywhere, the most telling reason wins: a real verification failure
# over "not my issuer", over "no token".
_SPECIFICITY = {JwtStatus.MISSING: 0, JwtStatus.UNKNOWN_ISSUER: 1}


@dataclass(frozen=True, kw_only=True)
class JwtResult:
    """The filter's verdict. `ok` false means answer `status` with `body` and `headers` now."""

    ok: bool
    status: int = 200
    reason: JwtStatus = JwtStatus.OK
    payload: dict[str, Any] | None = None
    provider: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def body(self) -> str:
        """Envoy's local-reply body: the status string."""
        return self.reason.value


@dataclass(frozen=True)
class _Key:
    kid: str | None
    alg: str | None
    kty: str
    crv: str | None
    key: Any  # a cryptography public key


@dataclass(frozen=True)
class _Token:
    raw: str
    header_name: str | None  # where it came from, for `forward: false`


@dataclass(frozen=True)
class _Check:
    status: JwtStatus
    payload: dict[str, Any] | None = None
    provider: str | None = None
    token: _Token | None = None


def parse_jwks(text: str) -> list[_Key] | None:
    """The usable RSA and EC public keys of a JWKS document; None when it is not a JWKS.
    Keys of other types (or malformed ones) are skipped: they can verify nothing here."""
    try:
        document = json.loads(text)
    except ValueError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        return None
    keys = []
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or jwk.get("kty") not in ("RSA", "EC"):
            continue
        loader = pyjwt.algorithms.RSAAlgorithm if jwk["kty"] == "RSA" else pyjwt.algorithms.ECAlgorithm
        try:
            key = loader.from_jwk(jwk)
        except (pyjwt.PyJWTError, ValueError, KeyError, TypeError):
            continue
        if hasattr(key, "public_key"):
            key = key.public_key()  # a JWKS that leaked private parts still verifies as public
        keys.append(_Key(jwk.get("kid"), jwk.get("alg"), jwk["kty"], jwk.get("crv"), key))
    return keys


class Provider:
    """One compiled JwtProvider: where its tokens are, what they must say, its keys."""

    def __init__(self, name: str, p: config_pb2.JwtProvider, clock: Callable[[], float]):
        self.name = name
        self.issuer = p.issuer
        self.audiences = frozenset(p.audiences)
        self.forward = p.forward
        self.payload_key = p.payload_in_metadata or None
        self.require_expiration = p.require_expiration
        self.clock_skew = p.clock_skew_seconds or DEFAULT_CLOCK_SKEW_SECONDS
        self._clock = clock
        self.remote_uri = p.remote_jwks.http_uri.uri if p.HasField("remote_jwks") else None
        self._keys: list[_Key] | None = None
        if p.HasField("local_jwks"):
            source = p.local_jwks
            if source.WhichOneof("specifier") != "inline_string":
                raise ConfigError(f"jwt provider {name}: local_jwks must be inline_string (no file access)")
            self._keys = parse_jwks(source.inline_string) or []
        self._headers = [(h.name.lower(), h.value_prefix) for h in p.from_headers]
        self._params = list(p.from_params)
        self._cookies = list(p.from_cookies)
        if not (self._headers or self._params or self._cookies):
            self._headers, self._params = [("authorization", "Bearer ")], ["access_token"]

    def set_jwks(self, text: str) -> None:
        """Install a fetched JWKS (remote_jwks); an unusable document leaves no keys."""
        self._keys = parse_jwks(text) or []

    def tokens(self, request: Request) -> list[_Token]:
        """The tokens in this provider's locations, in configuration order."""
        found = []
        for name, prefix in self._headers:
            for key, value in request.headers:
                if key == name and (token := _after_prefix(value, prefix)):
                    found.append(_Token(token, name))
        params = matchers.query_parameters(request.path)
        found += [_Token(params[p], None) for p in self._params if params.get(p)]
        cookies = _cookies(request)
        found += [_Token(cookies[c], None) for c in self._cookies if cookies.get(c)]
        return found

    def check(self, request: Request, audiences: frozenset[str] | None = None) -> _Check:
        """Verify this provider's token in the request (the first one found)."""
        tokens = self.tokens(request)
        if not tokens:
            return _Check(JwtStatus.MISSING, provider=self.name)
        status, payload = self.verify(tokens[0].raw, self.audiences if audiences is None else audiences)
        return _Check(status, payload if status is JwtStatus.OK else None, self.name, tokens[0])

    def verify(self, token: str, audiences: frozenset[str]) -> tuple[JwtStatus, dict[str, Any] | None]:
        """Check one token against this provider, in Envoy's order."""
        parts = token.split(".")
        if len(parts) != 3:
            return JwtStatus.MALFORMED, None
        try:
            header, payload = (json.loads(_b64decode(part)) for part in parts[:2])
            signature = _b64decode(parts[2])
        except (ValueError, binascii.Error):
            return JwtStatus.MALFORMED, None
        if not isinstance(header, dict) or not isinstance(payload, dict):
            return JwtStatus.MALFORMED, None
        alg = header.get("alg")
        if alg not in _SUPPORTED_ALGS:
            return JwtStatus.BAD_ALG, None
        status = self._check_claims(payload, audiences)
        if status is not JwtStatus.OK:
            return status, None
        if self._keys is None:
            return JwtStatus.JWKS_UNAVAILABLE, None
        candidates = [k for k in self._keys if _key_fits(k, header.get("kid"), alg)]
        if not candidates:
            return JwtStatus.NO_KEY, None
        algorithm = pyjwt.get_algorithm_by_name(alg)
        signing_input = f"{parts[0]}.{parts[1]}".encode()
        for key in candidates:
            try:
                if algorithm.verify(signing_input, key.key, signature):
                    return JwtStatus.OK, payload
            except (ValueError, TypeError, pyjwt.PyJWTError):
                continue
        return JwtStatus.BAD_SIGNATURE, None

    def _check_claims(self, payload: dict[str, Any], audiences: frozenset[str]) -> JwtStatus:
        if self.issuer and payload.get("iss") != self.issuer:
            return JwtStatus.UNKNOWN_ISSUER
        now = self._clock()
        exp, nbf = payload.get("exp"), payload.get("nbf")
        if exp is None and self.require_expiration:
            return JwtStatus.NO_EXPIRATION
        if isinstance(exp, int | float) and now > exp + self.clock_skew:
            return JwtStatus.EXPIRED
        if isinstance(nbf, int | float) and now < nbf - self.clock_skew:
            return JwtStatus.NOT_YET_VALID
        if audiences:
            aud = payload.get("aud")
            presented = {aud} if isinstance(aud, str) else set(aud) if isinstance(aud, list) else set()
            if not presented & audiences:
                return JwtStatus.AUDIENCE
        return JwtStatus.OK


class Authenticator:
    """One `envoy.filters.http.jwt_authn` filter. Build once per Listener; `authenticate` is
    pure apart from setting the request's payload (and stripping a non-forwarded token)."""

    def __init__(self, config: config_pb2.JwtAuthentication, *, clock: Callable[[], float]):
        if config.requirement_map or config.filter_state_rules.name:
            raise ConfigError("jwt_authn: requirement_map and filter_state_rules are not supported")
        self.providers = {name: Provider(name, p, clock) for name, p in config.providers.items()}
        # A rule without `requires` turns verification off for what it matches (Envoy docs).
        self._rules = [
            (compile_route_match(rule.match), rule.requires if rule.HasField("requires") else None)
            for rule in config.rules
        ]
        for rule in config.rules:
            if rule.WhichOneof("requirement_type") == "requirement_name":
                raise ConfigError("jwt_authn: rules[].requirement_name is not supported")

    @classmethod
    def from_http_filters(
        cls, http_filters: Iterable[hcm_pb2.HttpFilter], *, clock: Callable[[], float]
    ) -> Authenticator | None:
        """The authenticator for a chain's jwt_authn filter, or None when it has none."""
        for f in http_filters:
            if f.name == JWT_AUTHN_FILTER and not f.disabled:
                config = config_pb2.JwtAuthentication()
                if not f.typed_config.Unpack(config):
                    raise ConfigError(f"{JWT_AUTHN_FILTER}: typed_config is {f.typed_config.type_url}")
                return cls(config, clock=clock)
        return None

    def remote_jwks_uris(self) -> dict[str, str]:
        """Provider name → JWKS URI, for the providers whose keys must be fetched."""
        return {name: p.remote_uri for name, p in self.providers.items() if p.remote_uri}

    def set_remote_jwks(self, provider: str, text: str) -> None:
        """Install a fetched JWKS document for a provider."""
        self.providers[provider].set_jwks(text)

    def authenticate(self, request: Request) -> JwtResult:
        """Run the filter on a request (see the module docstring for the rules)."""
        # No rule matching, or a matching rule without a requirement: nothing to verify.
        requirement = next((req for match, req in self._rules if match(request)), None)
        if requirement is None:
            return JwtResult(ok=True)
        check = self._requirement(requirement, request)
        if check.status is JwtStatus.OK:
            if check.payload is not None and check.provider is not None:
                self._accept(request, check)
            return JwtResult(ok=True, payload=check.payload, provider=check.provider)
        return self._reject(request, check)

    # --- requirements ---------------------------------------------------------------------------

    def _requirement(self, req: config_pb2.JwtRequirement, request: Request) -> _Check:
        kind = req.WhichOneof("requires_type")
        if kind == "provider_name":
            return self._provider(req.provider_name).check(request)
        if kind == "provider_and_audiences":
            pa = req.provider_and_audiences
            return self._provider(pa.provider_name).check(request, frozenset(pa.audiences))
        if kind == "requires_all":
            checks = [self._requirement(r, request) for r in req.requires_all.requirements]
            failed = next((c for c in checks if c.status is not JwtStatus.OK), None)
            return failed or next((c for c in checks if c.payload is not None), _Check(JwtStatus.OK))
        if kind == "requires_any":
            return self._any(list(req.requires_any.requirements), request)
        if kind in ("allow_missing", "allow_missing_or_failed"):
            return self._any([req], request)
        raise ConfigError(f"jwt_authn: requirement {kind or '(empty)'} is not supported")

    def _any(self, options: list[config_pb2.JwtRequirement], request: Request) -> _Check:
        # allow_missing inside requires_any is judged on what its siblings saw: every provider
        # found no token. A lone allow_missing looks at every provider's locations.
        lenient = {r.WhichOneof("requires_type") for r in options} & {"allow_missing", "allow_missing_or_failed"}
        strict = [
            r for r in options if r.WhichOneof("requires_type") not in ("allow_missing", "allow_missing_or_failed")
        ]
        checks = [self._requirement(r, request) for r in strict]
        if not strict and lenient:
            checks = [p.check(request) for p in self.providers.values()]
        ok = next((c for c in checks if c.status is JwtStatus.OK), None)
        if ok is not None:
            return ok
        if "allow_missing_or_failed" in lenient:
            return _Check(JwtStatus.OK)
        if "allow_missing" in lenient and all(c.status is JwtStatus.MISSING for c in checks):
            return _Check(JwtStatus.OK)
        if not checks:
            return _Check(JwtStatus.MISSING)
        return max(checks, key=lambda c: _SPECIFICITY.get(c.status, 2))

    def _provider(self, name: str) -> Provider:
        provider = self.providers.get(name)
        if provider is None:
            raise ConfigError(f"jwt_authn: a requirement names unknown provider {name!r}")
        return provider

    # --- outcomes -----------------------------------------------------------------------------

    def _accept(self, request: Request, check: _Check) -> None:
        provider = self.providers[check.provider or ""]
        request.jwt_payload = check.payload
        metadata = request.filter_metadata.setdefault(JWT_AUTHN_FILTER, {})
        metadata[provider.payload_key or DEFAULT_PAYLOAD_KEY] = check.payload
        if not provider.forward and check.token is not None and check.token.header_name is not None:
            # forward: false — the upstream must not see the credential (Envoy removes the header).
            request.headers = [(k, v) for k, v in request.headers if k != check.token.header_name]

    def _reject(self, request: Request, check: _Check) -> JwtResult:
        realm = f"{request.scheme}://{request.authority}{request.url_path}"
        challenge = f'Bearer realm="{realm}"'
        if check.status is not JwtStatus.MISSING:
            challenge += ', error="invalid_token"'
        status = 403 if check.status is JwtStatus.AUDIENCE else 401
        return JwtResult(
            ok=False,
            status=status,
            reason=check.status,
            provider=check.provider,
            headers=(("www-authenticate", challenge),),
        )


def _key_fits(key: _Key, kid: Any, alg: str) -> bool:
    # Envoy (jwt_verify_lib): a key with a kid is tried only for tokens with that kid; a key with
    # an alg only for tokens of that alg; and the key type must suit the algorithm.
    if kid and key.kid and key.kid != kid:
        return False
    if key.alg and key.alg != alg:
        return False
    if alg.startswith(("RS", "PS")):
        return key.kty == "RSA"
    return key.kty == "EC" and key.crv == _EC_CURVES[alg]


def _after_prefix(value: str, prefix: str) -> str:
    """The token in a header value after `value_prefix` (the scheme compares case-insensitively,
    RFC 6750 §2.1); "" when the prefix is absent."""
    if prefix:
        if not value.lower().startswith(prefix.lower()):
            return ""
        value = value[len(prefix) :]
    return value.strip().split(",")[0].strip()


def _cookies(request: Request) -> Mapping[str, str]:
    found: dict[str, str] = {}
    for key, value in request.headers:
        if key == "cookie":
            for part in value.split(";"):
                name, _, cookie = part.strip().partition("=")
                found.setdefault(name, unquote(cookie))
    return found


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
