"""HMAC-SHA256 tokens scoped to one stream and one action, with an expiry, signed by a key with an id.

Wire forms, with claims ``{"s": stream, "a": action, "e": expiry (UNIX seconds)}``:

- ``v2.<kid>.<base64url(JSON claims)>.<base64url(HMAC-SHA256(key, "v2.<kid>." + claims part)[:16])>``:
  the key id names the key of the deployment's key set (``camflow.signing``) that signed it;
- ``v1.<base64url(JSON claims)>.<base64url(HMAC-SHA256(secret, "v1." + claims part))>``: the form of
  releases before key ids, signed with one plain secret, the key ``legacy``. It is issued while
  ``legacy`` is the current key (a deployment that never rotated) and verifies until it is retired.

``"e": 0`` means the token never expires (``issue(..., ttl=None)``, ``camflow token publish S --ttl never``).
Such a token is deterministic for its (stream, action, key), so a server holding the keys can recompute
it: RTSP Digest authentication needs the password on the server side (``permanent_tokens``). It is
revoked by retiring its key (which revokes every token signed with that key).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import math
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from camflow.errors import ConfigError, TokenError
from camflow.signing import KID_RE, LEGACY_KID, KeySet, KeysFile, SigningKey, create_file, new_kid, parse_env

V1 = "v1"
V2 = "v2"
PREFIX = V1  # the form before key ids
SECRET_ENV = "CAMFLOW_SECRET"
SECRET_FILE_ENV = "CAMFLOW_SECRET_FILE"
SECRET_FILE = "secret"
MAX_TOKEN_CHARS = 1024


class Action(enum.Enum):
    PUBLISH = "publish"
    VIEW = "view"
    ADMIN = "admin"  # an operator: stream "*" (every stream), e.g. the edge's stream list and API


class TokenExpired(TokenError):
    """A well-formed, correctly signed token past its expiry."""


class TokenScopeError(TokenError):
    """A correctly signed token for another stream or action."""


class TokenKeyRetired(TokenError):
    """A token whose key id names a key the operator retired (or that is not in the key set)."""


@dataclass(frozen=True)
class Claims:
    stream: str
    action: Action
    expires: float  # UNIX seconds; 0 = never

    @property
    def permanent(self) -> bool:
        return self.expires == 0


class KeySource(Protocol):
    """Where a signer gets its key set, each time it signs or verifies (a ``KeysFile`` re-reads)."""

    def keys(self) -> KeySet: ...


class FixedKeys:
    def __init__(self, keys: KeySet) -> None:
        self._keys = keys

    def keys(self) -> KeySet:
        return self._keys


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


V2_MAC_BYTES = 16  # v2 signs with HMAC-SHA256 truncated to 128 bits (RFC 2104 section 5): see below


def _mac(key: SigningKey, signed: str) -> str:
    """The signature of ``signed``: the whole HMAC-SHA256 for v1, its first 128 bits for v2, which
    keeps a token short enough for clients that cap a URL's password (FFmpeg's RTSP client keeps
    127 characters of ``user:password``; many cameras allow 64 or fewer) with a forgery still a
    2^-128 guess."""
    mac = hmac.new(key.secret, signed.encode(), hashlib.sha256).digest()
    return _b64(mac if signed.startswith(V1 + ".") else mac[:V2_MAC_BYTES])


def _signed(key: SigningKey, body: str) -> str:
    """``PREFIX.body.sig`` (v1 for the legacy key) or ``v2.kid.body.sig``."""
    head = V1 if key.legacy else f"{V2}.{key.kid}"
    return f"{head}.{body}.{_mac(key, f'{head}.{body}')}"


def _claims_part(stream: str, action: Action, expires: int) -> str:
    claims = {"s": stream, "a": action.value, "e": expires}
    return _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())


class TokenSigner:
    """Issues tokens with the current key of its key set; verifies them with any key that verifies.

    ``TokenSigner(secret)`` is one plain secret (the ``legacy`` key: v1 tokens, as before key ids).
    """

    def __init__(self, keys: bytes | KeySet | KeySource) -> None:
        if isinstance(keys, bytes):
            keys = KeySet.single(keys)
        self._source: KeySource = FixedKeys(keys) if isinstance(keys, KeySet) else keys

    def keys(self) -> KeySet:
        """The key set as of now (a keys file is re-read when it changed)."""
        return self._source.keys()

    def derive_key(self, purpose: str) -> bytes:
        """A key for another use of the current key (unrelated to token signatures)."""
        return self.derive_keys(purpose)[0]

    def derive_keys(self, purpose: str) -> list[bytes]:
        """``derive_key`` of every key that verifies, the current one first: what the current key
        derived signs, what any of them derived still checks, until its key is retired."""
        return [
            hmac.new(k.secret, f"camflow-key:{purpose}".encode(), hashlib.sha256).digest()
            for k in self.keys().keys
        ]

    def issue(self, stream: str, action: Action, ttl: float | None, now: float | None = None) -> str:
        """A token valid for ``ttl`` seconds, or forever (``"e": 0``, the same token every time) for None."""
        if ttl is not None and ttl <= 0:
            raise ConfigError(f"token ttl is {ttl} s, expected a positive number of seconds or never")
        t = time.time() if now is None else now
        body = _claims_part(stream, action, 0 if ttl is None else math.ceil(t + ttl))
        return _signed(self.keys().current, body)

    def permanent_tokens(self, stream: str, action: Action) -> list[str]:
        """The never-expiring token of (stream, action) under each key that verifies (current first)."""
        body = _claims_part(stream, action, 0)
        return [_signed(key, body) for key in self.keys().keys]

    def verify(self, token: str, stream: str, action: Action, now: float | None = None) -> Claims:
        """Return the claims of a valid token for (stream, action); raise a TokenError naming why not."""
        claims = self.verify_any(token, now)
        if claims.stream != stream:
            raise TokenScopeError(f"token is for stream {claims.stream!r}, not {stream!r}")
        if claims.action != action:
            raise TokenScopeError(f"token allows {claims.action.value!r}, not {action.value!r}")
        return claims

    def verify_any(self, token: str, now: float | None = None) -> Claims:
        """The claims of a correctly signed, unexpired token, whatever its scope."""
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenError(f"token is {len(token)} characters long, at most {MAX_TOKEN_CHARS} expected")
        if not token.isascii():  # hmac.compare_digest refuses non-ASCII str with a TypeError
            raise TokenError("token has non-ASCII characters, expected base64url and '.'")
        parts = token.split(".")
        keys = self.keys()
        if len(parts) == 4 and parts[0] == V2:
            _, kid, body, sig = parts
            key = keys.find(kid)
            if key is None:
                raise _unknown_key(keys, kid)
            head = f"{V2}.{kid}"
        elif len(parts) == 3 and parts[0] == V1:
            _, body, sig = parts
            key = keys.find(LEGACY_KID)
            if key is None and LEGACY_KID in keys.retired:
                raise TokenKeyRetired(
                    "token is v1 (signed with the plain secret of before key ids, key 'legacy'), "
                    "and key 'legacy' was retired: ask for a new token"
                )
            if key is None:
                raise TokenError("token is v1 (no key id), and no key 'legacy' (a plain secret) verifies v1")
            head = V1
        else:
            raise TokenError(f"token is not of the form {V2}.<key id>.<claims>.<signature>")
        if not hmac.compare_digest(_mac(key, f"{head}.{body}"), sig):
            raise TokenError("token signature does not match")
        try:
            raw = json.loads(_unb64(body))
            claims = Claims(stream=str(raw["s"]), action=Action(raw["a"]), expires=float(raw["e"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise TokenError(f"token claims are malformed: {exc}") from exc
        t = time.time() if now is None else now
        if not claims.permanent and claims.expires <= t:
            raise TokenExpired(f"token expired {int(t - claims.expires)} s ago")
        return claims


def _unknown_key(keys: KeySet, kid: str) -> TokenError:
    if KID_RE.fullmatch(kid) is None:
        return TokenError("token key id is malformed: expected 1-32 characters of A-Z a-z 0-9 _ -")
    if kid in keys.retired:
        return TokenKeyRetired(f"token key {kid!r} was retired: ask for a new token")
    return TokenError(f"token key {kid!r} is not one of this deployment's signing keys")


def load_keys(data_dir: Path | None) -> KeySource:
    """The token keys: ``CAMFLOW_SECRET`` if set (fixed), else the keys file (re-read when it changes):
    ``CAMFLOW_SECRET_FILE``, else ``<data_dir>/secret``, made with one new key on first run."""
    env = os.environ.get(SECRET_ENV)
    if env:
        return FixedKeys(parse_env(env, SECRET_ENV))
    named = os.environ.get(SECRET_FILE_ENV)
    if named:
        return KeysFile(Path(named))
    if data_dir is None:
        raise ConfigError(
            f"neither {SECRET_ENV} nor {SECRET_FILE_ENV} is set; every service of a deployment needs the "
            "same token keys"
        )
    path = data_dir / SECRET_FILE
    if not path.exists():
        create_file(path, KeySet((SigningKey(new_kid(), secrets.token_urlsafe(32).encode()),)))
    return KeysFile(path)
