"""A device (a camera) and its credential: made here, verified here, stored only as verifiers.

A credential is ``cfd1.<device>.<secret>``: the secret is 32 random bytes (``secrets``, base64url),
and the device name makes the credential self-identifying, so ``?token=`` and ``Bearer`` find their
device without trying every one. It is shown once, by ``camflow device add``; the registry keeps
only what verification needs:

- ``ha1``: MD5(``<device>:camflow:<credential>``), RFC 2617's HA1 for realm ``camflow`` and user
  = the device name. RTSP Digest never sends the password, so the server keeps HA1 (which is all
  a Digest check needs) instead of the credential. HA1 answers Digest challenges as the device:
  whoever can read the registry can publish as it over Digest (never over the other schemes),
  so the registry's backend (Kafka topic, store bucket) is protected like the token secret.
- ``secret_hash``: SHA-256 of the credential, for RTSP Basic, ``?token=`` and WHIP ``Bearer``.
  Not a slow KDF (scrypt, Argon2): those protect low-entropy passwords from guessing; a 256-bit
  random secret cannot be guessed from its hash anyway, and a KDF's deliberate cost per check
  would let anyone with a TCP connection burn the ingest's CPU.

A revoked device keeps its name, streams and dates (``camflow device list`` shows it as revoked
until ``camflow device remove``) but not its verifiers: nothing can verify against it any more.

On the wire (Kafka record value, store object) a device is JSON ``{"v": 1, ...fields}``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any, TypeVar

from camflow import jsonform
from camflow.errors import CamflowError, JsonFormError
from camflow.keys import check_stream_name, is_stream_name

CREDENTIAL_PREFIX = "cfd1"
DIGEST_REALM = "camflow"  # the realm of every RTSP Digest challenge: part of the stored HA1
SECRET_BYTES = 32
MAX_CREDENTIAL_CHARS = 160
VERSION = 1


class DeviceError(CamflowError):
    """A device name, credential or record that is not of its expected form."""


class DeviceRefused(CamflowError):
    """A device credential that does not authorize this publish; the message says why (and never
    contains the credential)."""


def digest_ha1(name: str, credential: str) -> str:
    """RFC 2617 HA1 of user ``name`` with password ``credential`` in realm ``camflow`` (MD5, hex)."""
    return hashlib.md5(f"{name}:{DIGEST_REALM}:{credential}".encode(), usedforsecurity=False).hexdigest()


def secret_hash(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


def credential_device(credential: str) -> str:
    """The device a credential names; a DeviceError when it is not ``cfd1.<device>.<secret>``."""
    if len(credential) > MAX_CREDENTIAL_CHARS or not credential.isascii():
        raise DeviceError(f"device credential: expected {CREDENTIAL_PREFIX}.<device>.<secret> in ASCII")
    parts = credential.split(".")
    if len(parts) != 3 or parts[0] != CREDENTIAL_PREFIX or not is_stream_name(parts[1]) or not parts[2]:
        raise DeviceError(f"device credential: expected {CREDENTIAL_PREFIX}.<device>.<secret>")
    return parts[1]


def is_device_credential(text: str) -> bool:
    return text.startswith(CREDENTIAL_PREFIX + ".")


@dataclass(frozen=True)
class Device:
    name: str
    streams: tuple[str, ...]  # the streams it may publish
    created: float  # UNIX seconds
    ha1: str = ""  # "" once revoked
    secret_hash: str = ""
    revoked: float | None = None  # UNIX seconds

    @classmethod
    def create(cls, name: str, streams: tuple[str, ...], now: float) -> tuple[Device, str]:
        """A new device and its credential (to show once: it is not kept)."""
        check_stream_name(name)
        for stream in streams:
            check_stream_name(stream)
        credential = f"{CREDENTIAL_PREFIX}.{name}.{secrets.token_urlsafe(SECRET_BYTES)}"
        device = cls(name, streams or (name,), now, digest_ha1(name, credential), secret_hash(credential))
        return device, credential

    def revoke(self, now: float) -> Device:
        return dataclasses.replace(self, ha1="", secret_hash="", revoked=self.revoked or now)

    def with_streams(self, streams: tuple[str, ...]) -> Device:
        for stream in streams:
            check_stream_name(stream)
        return dataclasses.replace(self, streams=streams)

    def holds(self, credential: str) -> bool:
        """True if ``credential`` is this (unrevoked) device's (constant-time comparison)."""
        return bool(self.secret_hash) and hmac.compare_digest(self.secret_hash, secret_hash(credential))

    def refusal(self, stream: str) -> str | None:
        """Why this device may not publish ``stream`` now; None when it may."""
        if self.revoked is not None:
            return f"device {self.name!r} is revoked"
        if stream not in self.streams:
            return f"device {self.name!r} may publish {', '.join(self.streams)}, not {stream!r}"
        return None


@dataclass(frozen=True)
class Seen:
    """Where and when ingest last accepted a publish by a device (kept apart from the device's record,
    so ingest never rewrites a record the operator may be revoking at that moment)."""

    name: str
    at: float  # UNIX seconds
    address: str


_T = TypeVar("_T", Device, Seen)


def encode(record: Device | Seen) -> bytes:
    return json.dumps({"v": VERSION, **jsonform.to_json(record)}, separators=(",", ":")).encode()


def decode(cls: type[_T], data: bytes) -> _T:
    """A record written by ``encode``; a DeviceError naming what is wrong otherwise."""
    try:
        raw: Any = json.loads(data)
        if not isinstance(raw, dict) or raw.get("v") != VERSION:
            raise DeviceError(f'{cls.__name__.lower()} record: expected a JSON object with "v": {VERSION}')
        record = jsonform.from_json(cls, raw)
    except (ValueError, KeyError, JsonFormError) as exc:
        raise DeviceError(f"{cls.__name__.lower()} record is malformed: {exc}") from None
    if not is_stream_name(record.name):
        raise DeviceError(f"{cls.__name__.lower()} record of {record.name[:80]!r}: not a device name")
    return record
