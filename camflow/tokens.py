"""HMAC-SHA256 tokens scoped to one stream and one action, with an expiry.

Wire form: ``v1.<base64url(JSON claims)>.<base64url(HMAC-SHA256(secret, "v1." + claims part))>``
with claims ``{"s": stream, "a": action, "e": expiry (UNIX seconds)}``.

``"e": 0`` means the token never expires (``issue(..., ttl=None)``, ``camflow token publish S --ttl never``).
Such a token is deterministic for its (stream, action), so a server holding the secret can recompute it:
RTSP Digest authentication needs the password on the server side. It is revoked only by rotating
``CAMFLOW_SECRET`` (which revokes every token).
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

from camflow.errors import ConfigError, TokenError

PREFIX = "v1"
SECRET_ENV = "CAMFLOW_SECRET"
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


@dataclass(frozen=True)
class Claims:
    stream: str
    action: Action
    expires: float  # UNIX seconds; 0 = never

    @property
    def permanent(self) -> bool:
        return self.expires == 0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ConfigError(f"token secret is {len(secret)} bytes long, expected at least 16")
        self._secret = secret

    def derive_key(self, purpose: str) -> bytes:
        """A key for another use of the secret (RTSP Digest nonces), unrelated to token signatures."""
        return hmac.new(self._secret, f"camflow-key:{purpose}".encode(), hashlib.sha256).digest()

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._secret, f"{PREFIX}.{body}".encode(), hashlib.sha256).digest())

    def issue(self, stream: str, action: Action, ttl: float | None, now: float | None = None) -> str:
        """A token valid for ``ttl`` seconds, or forever (``"e": 0``, the same token every time) for None."""
        if ttl is not None and ttl <= 0:
            raise ConfigError(f"token ttl is {ttl} s, expected a positive number of seconds or never")
        t = time.time() if now is None else now
        claims = {"s": stream, "a": action.value, "e": 0 if ttl is None else math.ceil(t + ttl)}
        body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        return f"{PREFIX}.{body}.{self._sign(body)}"

    def verify(self, token: str, stream: str, action: Action, now: float | None = None) -> Claims:
        """Return the claims of a valid token for (stream, action); raise a TokenError naming why not."""
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenError(f"token is {len(token)} characters long, at most {MAX_TOKEN_CHARS} expected")
        if not token.isascii():  # hmac.compare_digest refuses non-ASCII str with a TypeError
            raise TokenError("token has non-ASCII characters, expected base64url and '.'")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != PREFIX:
            raise TokenError(f"token is not of the form {PREFIX}.<claims>.<signature>")
        _, body, sig = parts
        if not hmac.compare_digest(self._sign(body), sig):
            raise TokenError("token signature does not match")
        try:
            raw = json.loads(_unb64(body))
            claims = Claims(stream=str(raw["s"]), action=Action(raw["a"]), expires=float(raw["e"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise TokenError(f"token claims are malformed: {exc}") from exc
        t = time.time() if now is None else now
        if not claims.permanent and claims.expires <= t:
            raise TokenExpired(f"token expired {int(t - claims.expires)} s ago")
        if claims.stream != stream:
            raise TokenScopeError(f"token is for stream {claims.stream!r}, not {stream!r}")
        if claims.action != action:
            raise TokenScopeError(f"token allows {claims.action.value!r}, not {action.value!r}")
        return claims


def load_secret(data_dir: Path | None) -> bytes:
    """The token secret: ``CAMFLOW_SECRET`` if set, else ``<data_dir>/secret``, created on first run."""
    env = os.environ.get(SECRET_ENV)
    if env:
        return env.encode()
    if data_dir is None:
        raise ConfigError(f"{SECRET_ENV} is not set; every service of a deployment needs the same secret")
    path = data_dir / SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
        os.replace(tmp, path)
    return path.read_text().strip().encode()
