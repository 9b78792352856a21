"""Publisher authentication schemes: which challenges a 401 carries, and stateless Digest nonces.

A Digest nonce is ``<issue time, hex>.<HMAC-SHA256(key, issue time), 32 hex>``: the server keeps no
state, yet a nonce it did not issue, or one older than its lifetime, is refused.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import time
from collections.abc import Callable, Sequence

from camflow.devices import DIGEST_REALM
from ingest.errors import ParseError
from ingest.sources.rtsp.headers import Challenge

REALM = DIGEST_REALM  # "camflow": device records keep HA1s of this realm
NONCE_LIFETIME = 60.0  # seconds between the 401 and the request that answers it


class AuthScheme(enum.Enum):
    DIGEST = "digest"
    BASIC = "basic"


def parse_schemes(text: str) -> tuple[AuthScheme, ...]:
    """``digest,basic`` (any order, any case) to schemes; at least one."""
    schemes: list[AuthScheme] = []
    for item in text.split(","):
        name = item.strip().lower()
        try:
            scheme = AuthScheme(name)
        except ValueError:
            raise ParseError(
                f"RTSP auth scheme {name!r}: expected digest and/or basic, e.g. digest,basic"
            ) from None
        if scheme not in schemes:
            schemes.append(scheme)
    if not schemes:
        raise ParseError(f"RTSP auth schemes {text!r}: expected digest and/or basic, e.g. digest,basic")
    return tuple(schemes)


class DigestNonces:
    """Stateless nonces: their issue time under an HMAC. ``key`` is one key, or the keys as of now
    (``TokenSigner.derive_keys``): the first signs, any of them checks, so a key rotation does not
    void the nonces in flight."""

    def __init__(
        self,
        key: bytes | Callable[[], Sequence[bytes]],
        *,
        lifetime: float = NONCE_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(key, bytes):
            fixed = (key,)
            self._keys: Callable[[], Sequence[bytes]] = lambda: fixed
        else:
            self._keys = key
        self.lifetime = lifetime
        self._clock = clock

    @staticmethod
    def _mac(key: bytes, stamp: str) -> str:
        return hmac.new(key, stamp.encode(), hashlib.sha256).hexdigest()[:32]

    def issue(self) -> str:
        stamp = format(int(self._clock()), "x")
        return f"{stamp}.{self._mac(self._keys()[0], stamp)}"

    def check(self, nonce: str) -> bool:
        """True for a nonce this key issued within ``lifetime`` seconds."""
        stamp, sep, mac = nonce.partition(".")
        if not sep or not 0 < len(stamp) <= 16 or not nonce.isascii():
            return False
        try:
            issued = int(stamp, 16)
        except ValueError:
            return False
        if not any(hmac.compare_digest(self._mac(key, stamp), mac) for key in self._keys()):
            return False
        return 0 <= self._clock() - issued <= self.lifetime


class Challenger:
    """The ``WWW-Authenticate`` values of a 401, strongest scheme first (Digest, then Basic)."""

    def __init__(self, schemes: tuple[AuthScheme, ...], nonces: DigestNonces | None) -> None:
        if AuthScheme.DIGEST in schemes and nonces is None:
            raise ValueError("Digest authentication needs a nonce key")
        self.schemes = schemes
        self.nonces = nonces

    def __call__(self) -> tuple[str, ...]:
        values = []
        if AuthScheme.DIGEST in self.schemes and self.nonces is not None:
            values.append(str(Challenge("Digest", REALM, self.nonces.issue(), algorithm="MD5")))
        if AuthScheme.BASIC in self.schemes:
            values.append(str(Challenge("Basic", REALM)))
        return tuple(values)


def basic_only() -> tuple[str, ...]:
    return (str(Challenge("Basic", REALM)),)
