"""View tokens from an external identity provider: JWTs verified against its JWKS with PyJWT.

A platform's own login hands a viewer a JWT; the edge takes it wherever it takes a view token
(``?token=``, ``Authorization: Bearer``). It passes when:

- its header names an allowed asymmetric algorithm (RS256, ES256, EdDSA; never ``none``, never an
  HS* that would use a public key as an HMAC secret) and a ``kid`` of the JWKS whose key type fits
  that algorithm (RSA of 2048 bits or more, EC P-256, OKP Ed25519/Ed448);
- its signature verifies, ``exp`` is in the future (``LEEWAY`` seconds of clock skew allowed),
  ``iss`` is ``--jwt-issuer`` and ``aud`` holds ``--jwt-audience`` (all three required);
- its ``scope`` (space-separated, RFC 9068) holds ``camflow:view:STREAM`` for the stream, or
  ``camflow:view:*`` for every stream. A JWT never grants publish or admin.

The JWKS is fetched with aiohttp (never on a request's path unless a JWT names a key id not seen
yet: then at most once per ``UNKNOWN_KID_INTERVAL``), refreshed every ``--jwks-refresh`` seconds;
a failed fetch keeps the keys it had.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from camflow.errors import ConfigError, TokenError
from camflow.log import get_logger
from camflow.tokens import TokenExpired, TokenScopeError

KEY_TYPES = {"RS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}  # allowed algorithms and their key type
CURVES = {"EC": ("P-256",), "OKP": ("Ed25519", "Ed448")}
MIN_RSA_BITS = 2048
LEEWAY = 30.0  # seconds of clock skew allowed on exp, nbf and iat
SCOPE_PREFIX = "camflow:view:"
EVERY_STREAM = "*"
MAX_JWT_CHARS = 8192
MAX_JWKS_BYTES = 256 * 1024
MAX_JWKS_KEYS = 32
FETCH_TIMEOUT = 10.0
RETRY_AFTER_FAILURE = 10.0
UNKNOWN_KID_INTERVAL = 30.0  # at most one JWKS fetch per this for a key id not in the JWKS

log = get_logger("edge")


class UnknownJwtKey(TokenError):
    """A JWT signed with a key id that the JWKS did not have when last fetched."""

    def __init__(self, kid: str) -> None:
        super().__init__(f"JWT key {kid!r} is not in the identity provider's JWKS")
        self.kid = kid


@dataclass(frozen=True)
class JwtSettings:
    jwks_url: str
    issuer: str
    audience: str
    refresh: float

    @classmethod
    def parse(cls, jwks_url: str, issuer: str | None, audience: str | None, refresh: float) -> JwtSettings:
        """Check the edge's JWT flags: an https JWKS URL (http only to loopback), issuer and audience."""
        parts = urlsplit(jwks_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError(f"--jwks-url {jwks_url!r}: expected https://HOST/PATH")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise ConfigError(
                f"--jwks-url {jwks_url!r}: expected https:// (plain http only to a loopback host), "
                "or anyone on the path could hand the edge their own keys"
            )
        if not issuer or not audience:
            raise ConfigError(
                "--jwks-url needs --jwt-issuer and --jwt-audience: a JWT is accepted only from that issuer "
                "and for that audience (else any token of the identity provider, for any app, would pass)"
            )
        return cls(jwks_url, issuer, audience, refresh)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ViewGrant:
    """What a verified JWT allows: viewing ``streams`` (or every stream) until ``expires`` (UNIX s)."""

    streams: frozenset[str]
    every_stream: bool
    expires: float


def looks_like_jwt(token: str) -> bool:
    """A JWS compact token (its header is base64url JSON: ``eyJ``), not a camflow ``v1.``/``v2.`` one."""
    return token.startswith("eyJ") and token.count(".") == 2


def granted_streams(scope: Any) -> set[str]:
    """The streams of ``camflow:view:STREAM`` in a space-separated ``scope`` (``*``: every stream)."""
    if not isinstance(scope, str):
        return set()
    return {item[len(SCOPE_PREFIX) :] for item in scope.split() if item.startswith(SCOPE_PREFIX)}


def parse_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    """The usable signing keys of a JWKS document by key id; keys of other types or uses are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('a JWKS is a JSON object {"keys": [...]}')
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"][:MAX_JWKS_KEYS]:
        if not isinstance(entry, dict):
            continue
        kid, kty, alg = entry.get("kid"), entry.get("kty"), entry.get("alg")
        if not isinstance(kid, str) or kty not in CURVES.keys() | {"RSA"} or entry.get("use", "sig") != "sig":
            continue
        if alg is not None and KEY_TYPES.get(alg) != kty:
            continue
        if kty in CURVES and entry.get("crv") not in CURVES[kty]:
            continue
        try:
            key = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        if isinstance(key.key, RSAPublicKey) and key.key.key_size < MIN_RSA_BITS:
            continue
        keys[kid] = key
    return keys


async def fetch_jwks(url: str) -> bytes:
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url, allow_redirects=False) as response,
    ):
        if response.status != 200:
            raise ValueError(f"HTTP {response.status}")
        body = await response.content.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
        return body


class IdentityProvider:
    """The JWKS of one identity provider, and the check of its JWTs against it (``verify``, no I/O)."""

    def __init__(
        self,
        settings: JwtSettings,
        *,
        fetch: Callable[[str], Awaitable[bytes]] = fetch_jwks,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.keys: Mapping[str, jwt.PyJWK] = {}  # replaced (never changed in place) by each refresh
        self.fetched = 0  # successful fetches
        self._fetch = fetch
        self._clock = clock
        self._last_unknown: float | None = None
        self._lock = asyncio.Lock()

    def verify(self, token: str) -> ViewGrant:
        """What a JWT allows; raises a ``TokenError`` naming why it is refused (never echoing it)."""
        if len(token) > MAX_JWT_CHARS:
            raise TokenError(f"JWT is {len(token)} characters long, at most {MAX_JWT_CHARS} expected")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("JWT header is malformed") from None
        alg = header.get("alg")
        if alg not in KEY_TYPES:
            shown = alg[:16] if isinstance(alg, str) else alg
            raise TokenError(f"JWT alg {shown!r} is not allowed: expected one of {', '.join(KEY_TYPES)}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not 0 < len(kid) <= 128:
            raise TokenError("JWT header has no kid: expected the id of a key of the identity provider")
        key = self.keys.get(kid)
        if key is None:
            raise UnknownJwtKey(kid)
        if key.key_type != KEY_TYPES[alg]:
            raise TokenError(f"JWT alg {alg!r} does not fit key {kid!r} of type {key.key_type}")
        claims = self._decode(token, key, alg)
        granted = granted_streams(claims.get("scope"))
        if not granted:
            raise TokenScopeError(f"JWT scope grants no stream: expected {SCOPE_PREFIX}STREAM")
        every = EVERY_STREAM in granted
        return ViewGrant(frozenset(granted - {EVERY_STREAM}), every, float(claims["exp"]) + LEEWAY)

    def _decode(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        settings = self.settings
        try:
            return jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=LEEWAY,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired(f"JWT expired (exp is more than {LEEWAY:g} s past)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"JWT has no {exc.claim!r} claim: exp, iss and aud are required") from None
        except jwt.InvalidAudienceError:
            raise TokenError(f"JWT audience is not {settings.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise TokenError(f"JWT issuer is not {settings.issuer!r}") from None
        except (jwt.ImmatureSignatureError, jwt.InvalidIssuedAtError):
            raise TokenError("JWT is not valid yet (nbf or iat in the future)") from None
        except jwt.InvalidSignatureError:
            raise TokenError(f"JWT signature does not match key {key.key_id!r}") from None
        except jwt.PyJWTError:
            raise TokenError("JWT is malformed") from None

    async def refresh(self) -> bool:
        """Fetch the JWKS; True when it was fetched (a failure keeps the keys, logged)."""
        async with self._lock:
            try:
                keys = parse_jwks(json.loads(await self._fetch(self.settings.jwks_url)))
            except (aiohttp.ClientError, TimeoutError, ValueError, UnicodeDecodeError) as exc:
                log.warning("jwks_fetch_failed", url=self.settings.jwks_url, error=str(exc)[:200])
                return False
            if keys.keys() != self.keys.keys() or any(k.key != self.keys[i].key for i, k in keys.items()):
                self.keys = keys
                log.info("jwks_loaded", url=self.settings.jwks_url, kids=sorted(keys))
            self.fetched += 1
            return True

    async def learn(self, kid: str) -> bool:
        """Refetch the JWKS for a key id it did not have (at most once per ``UNKNOWN_KID_INTERVAL``);
        True when the key is known now."""
        if kid in self.keys:
            return True
        if self._lock.locked():  # a fetch in flight (another request's): wait for its keys
            async with self._lock:
                return kid in self.keys
        now = self._clock()
        if self._last_unknown is not None and now - self._last_unknown < UNKNOWN_KID_INTERVAL:
            return False
        self._last_unknown = now
        await self.refresh()
        return kid in self.keys

    async def run(self) -> None:
        """Refresh every ``settings.refresh`` seconds (sooner after a failure), until cancelled."""
        while True:
            interval = self.settings.refresh
            await asyncio.sleep(interval if await self.refresh() else min(RETRY_AFTER_FAILURE, interval))
