"""RTSP header values: Transport, Session (RFC 2326 12.39, 12.37) and Basic/Digest authentication."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ingest.errors import ParseError

_PROTOCOL = re.compile(r"[A-Za-z0-9]+/[A-Za-z0-9]+(/[A-Za-z0-9]+)?")
_SESSION_ID = re.compile(r"[A-Za-z0-9$\-_.+]+")


def _pair(name: str, value: str | None, maximum: int) -> tuple[int, int]:
    """``a-b`` (or a single ``a``, meaning ``a-(a+1)``) as a pair of integers in 0..maximum."""
    low, sep, high = (value or "").partition("-")
    try:
        first = int(low) if low.isascii() and low.isdigit() else -1
        second = (int(high) if high.isascii() and high.isdigit() else -1) if sep else first + 1
    except ValueError:
        first = second = -1
    if not (0 <= first <= maximum and 0 <= second <= maximum):
        raise ParseError(f"Transport {name}={value!r}: expected N-M with 0 <= N, M <= {maximum}")
    return first, second


@dataclass(frozen=True)
class TransportSpec:
    """One entry of a Transport header, e.g. ``RTP/AVP/TCP;unicast;interleaved=0-1;mode=record``."""

    protocol: str  # upper case: RTP/AVP (UDP), RTP/AVP/UDP, RTP/AVP/TCP, or anything else a client offers
    delivery: Literal["unicast", "multicast"] | None = None
    interleaved: tuple[int, int] | None = None
    client_port: tuple[int, int] | None = None
    server_port: tuple[int, int] | None = None
    mode: str | None = None  # lower case, quotes removed: "record", "play"
    params: tuple[tuple[str, str | None], ...] = ()  # every other parameter, in order

    @property
    def lower_transport(self) -> Literal["TCP", "UDP"] | None:
        """TCP or UDP for RTP/AVP profiles; None for a protocol ingest does not speak."""
        if self.protocol in ("RTP/AVP", "RTP/AVP/UDP"):
            return "UDP"
        return "TCP" if self.protocol == "RTP/AVP/TCP" else None

    @property
    def is_record(self) -> bool:
        return self.mode == "record"

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name.lower():
                return value
        return None

    @classmethod
    def parse(cls, value: str) -> TransportSpec:
        parts = [part.strip() for part in value.split(";")]
        protocol = parts[0].upper()
        if not _PROTOCOL.fullmatch(protocol):
            raise ParseError(f"Transport protocol {parts[0]!r}: expected e.g. RTP/AVP or RTP/AVP/TCP")
        delivery: Literal["unicast", "multicast"] | None = None
        fields: dict[str, tuple[int, int] | None] = {
            "interleaved": None,
            "client_port": None,
            "server_port": None,
        }
        mode = None
        params: list[tuple[str, str | None]] = []
        for part in parts[1:]:
            if not part:
                continue
            key, sep, raw = part.partition("=")
            key = key.strip().lower()
            val = raw.strip() if sep else None
            if key in ("unicast", "multicast"):
                delivery = "unicast" if key == "unicast" else "multicast"
            elif key in fields:
                fields[key] = _pair(key, val, 255 if key == "interleaved" else 65535)
            elif key == "mode":
                mode = (val or "").strip('"').lower()
                if not mode:
                    raise ParseError(f"Transport mode {val!r}: expected mode=record or mode=play")
            else:
                params.append((key, val))
        return cls(
            protocol,
            delivery,
            fields["interleaved"],
            fields["client_port"],
            fields["server_port"],
            mode,
            tuple(params),
        )

    def __str__(self) -> str:
        parts = [self.protocol]
        if self.delivery:
            parts.append(self.delivery)
        for key, pair in (
            ("interleaved", self.interleaved),
            ("client_port", self.client_port),
            ("server_port", self.server_port),
        ):
            if pair is not None:
                parts.append(f"{key}={pair[0]}-{pair[1]}")
        parts.extend(key if value is None else f"{key}={value}" for key, value in self.params)
        if self.mode:
            parts.append(f"mode={self.mode}")
        return ";".join(parts)


@dataclass(frozen=True)
class Transport:
    """A Transport header: the client's transports in order of preference."""

    specs: tuple[TransportSpec, ...]

    @classmethod
    def parse(cls, value: str) -> Transport:
        specs = tuple(TransportSpec.parse(item) for item in value.split(",") if item.strip())
        if not specs:
            raise ParseError(f"Transport {value!r}: expected at least one transport spec")
        return cls(specs)

    def __str__(self) -> str:
        return ",".join(str(spec) for spec in self.specs)


@dataclass(frozen=True)
class Session:
    """A Session header: ``<id>[;timeout=<seconds>]``."""

    session_id: str
    timeout: int | None = None

    @classmethod
    def parse(cls, value: str) -> Session:
        session_id, *params = (part.strip() for part in value.split(";"))
        if not _SESSION_ID.fullmatch(session_id):
            raise ParseError(f"Session id {session_id!r}: expected letters, digits or $-_.+")
        timeout = None
        for param in params:
            key, _, raw = param.partition("=")
            if key.strip().lower() == "timeout":
                raw = raw.strip()
                if not raw.isascii() or not raw.isdigit():
                    raise ParseError(f"Session timeout {raw!r}: expected a number of seconds")
                timeout = int(raw)
        return cls(session_id, timeout)

    def __str__(self) -> str:
        return self.session_id if self.timeout is None else f"{self.session_id};timeout={self.timeout}"


def parse_auth_params(text: str) -> dict[str, str]:
    """``key=value, key="quoted \\"value\\""`` (RFC 7235 auth-param list); keys lower-cased."""
    params: dict[str, str] = {}
    pos, n = 0, len(text)
    while pos < n:
        while pos < n and text[pos] in " \t,":
            pos += 1
        if pos >= n:
            break
        eq = text.find("=", pos)
        if eq < 0:
            raise ParseError(f"auth parameter {text[pos : pos + 40]!r}: expected key=value")
        key = text[pos:eq].strip().lower()
        if not key or not re.fullmatch(r"[A-Za-z0-9\-_]+", key):
            raise ParseError(f"auth parameter name {key!r}: expected a token")
        pos = eq + 1
        while pos < n and text[pos] in " \t":
            pos += 1
        if pos < n and text[pos] == '"':
            value, pos = _quoted(text, pos)
        else:
            end = text.find(",", pos)
            end = n if end < 0 else end
            value, pos = text[pos:end].strip(), end
        params[key] = value
    return params


def _quoted(text: str, pos: int) -> tuple[str, int]:
    out = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text):
            out.append(text[pos + 1])
            pos += 2
        elif char == '"':
            return "".join(out), pos + 1
        else:
            out.append(char)
            pos += 1
    raise ParseError(f"auth parameter value {text[-40:]!r}: expected a closing quote")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class BasicCredentials:
    username: str
    password: str

    def __str__(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


@dataclass(frozen=True)
class DigestCredentials:
    """The parameters of ``Authorization: Digest ...`` (RFC 2617 / 7616)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str | None = None
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None

    def verify(self, password: str, method: str) -> bool:
        """True if ``response`` is what ``password`` gives for this request (constant-time comparison)."""
        expected = digest_response(
            username=self.username,
            password=password,
            realm=self.realm,
            method=method,
            uri=self.uri,
            nonce=self.nonce,
            algorithm=self.algorithm or "MD5",
            qop=self.qop,
            nc=self.nc,
            cnonce=self.cnonce,
        )
        return hmac.compare_digest(expected.encode(), self.response.lower().encode())

    def verify_ha1(self, ha1: str, method: str) -> bool:
        """``verify`` against a stored MD5 HA1 (MD5(user:realm:password)); False for other algorithms."""
        if (self.algorithm or "MD5").upper() not in ("MD5", "MD5-SESS"):
            return False
        expected = digest_response_from_ha1(
            ha1,
            method=method,
            uri=self.uri,
            nonce=self.nonce,
            algorithm=self.algorithm or "MD5",
            qop=self.qop,
            nc=self.nc,
            cnonce=self.cnonce,
        )
        return hmac.compare_digest(expected.encode(), self.response.lower().encode())

    def __str__(self) -> str:
        fields = [
            ("username", self.username),
            ("realm", self.realm),
            ("nonce", self.nonce),
            ("uri", self.uri),
            ("response", self.response),
            ("opaque", self.opaque),
        ]
        parts = [f"{key}={_quote(value)}" for key, value in fields if value is not None]
        parts.extend(
            f"{key}={value}"
            for key, value in (("algorithm", self.algorithm), ("qop", self.qop), ("nc", self.nc))
            if value
        )
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce)}")
        return "Digest " + ", ".join(parts)


def parse_authorization(value: str) -> BasicCredentials | DigestCredentials:
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(rest.strip(), validate=True).decode()
        except ValueError:  # binascii.Error, UnicodeDecodeError, or a character outside ASCII
            raise ParseError(f"Basic credentials {rest[:40]!r}: expected base64 of user:password") from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise ParseError("Basic credentials without ':': expected base64 of user:password")
        return BasicCredentials(username, password)
    if scheme.lower() == "digest":
        params = parse_auth_params(rest)
        missing = [key for key in ("username", "realm", "nonce", "uri", "response") if key not in params]
        if missing:
            raise ParseError(f"Digest credentials without {', '.join(missing)}: expected RFC 7616 parameters")
        return DigestCredentials(
            params["username"],
            params["realm"],
            params["nonce"],
            params["uri"],
            params["response"],
            params.get("algorithm"),
            params.get("qop"),
            params.get("nc"),
            params.get("cnonce"),
            params.get("opaque"),
        )
    raise ParseError(f"Authorization scheme {scheme[:20]!r}: expected Basic or Digest")


@dataclass(frozen=True)
class Challenge:
    """A ``WWW-Authenticate`` value: ``Basic realm="x"`` or ``Digest realm="x", nonce="y", ...``."""

    scheme: Literal["Basic", "Digest"]
    realm: str
    nonce: str | None = None
    algorithm: str | None = None
    qop: str | None = None
    opaque: str | None = None
    stale: bool = False

    @classmethod
    def parse(cls, value: str) -> Challenge:
        scheme, _, rest = value.strip().partition(" ")
        params = parse_auth_params(rest)
        if "realm" not in params:
            raise ParseError(f"WWW-Authenticate {value[:60]!r}: expected a realm parameter")
        if scheme.lower() == "basic":
            return cls("Basic", params["realm"])
        if scheme.lower() != "digest":
            raise ParseError(f"WWW-Authenticate scheme {scheme[:20]!r}: expected Basic or Digest")
        if "nonce" not in params:
            raise ParseError(f"Digest challenge {value[:60]!r}: expected a nonce parameter")
        return cls(
            "Digest",
            params["realm"],
            params["nonce"],
            params.get("algorithm"),
            params.get("qop"),
            params.get("opaque"),
            params.get("stale", "").lower() == "true",
        )

    def __str__(self) -> str:
        parts = [f"realm={_quote(self.realm)}"]
        if self.scheme == "Digest":
            parts.append(f"nonce={_quote(self.nonce or '')}")
            if self.algorithm:
                parts.append(f"algorithm={self.algorithm}")
            if self.qop:
                parts.append(f"qop={_quote(self.qop)}")
            if self.opaque is not None:
                parts.append(f"opaque={_quote(self.opaque)}")
            if self.stale:
                parts.append("stale=true")
        return f"{self.scheme} " + ", ".join(parts)


_HASHES = {"MD5": "md5", "SHA-256": "sha256"}


def _digest_hash(algorithm: str) -> Callable[[str], str]:
    """H() of RFC 7616 for ``algorithm`` (its -sess variant hashes alike): text to lowercase hex."""
    base = algorithm.upper().removesuffix("-SESS")
    if base not in _HASHES:
        raise ParseError(f"Digest algorithm {algorithm!r}: expected MD5, MD5-sess, SHA-256 or SHA-256-sess")

    def h(text: str) -> str:
        return hashlib.new(_HASHES[base], text.encode()).hexdigest()

    return h


def digest_response(
    *,
    username: str,
    password: str,
    realm: str,
    method: str,
    uri: str,
    nonce: str,
    algorithm: str = "MD5",
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The hex ``response`` of RFC 2617 / 7616 for MD5, MD5-sess, SHA-256 and SHA-256-sess."""
    h = _digest_hash(algorithm)
    ha1 = h(f"{username}:{realm}:{password}")
    return digest_response_from_ha1(
        ha1, method=method, uri=uri, nonce=nonce, algorithm=algorithm, qop=qop, nc=nc, cnonce=cnonce
    )


def digest_response_from_ha1(
    ha1: str,
    *,
    method: str,
    uri: str,
    nonce: str,
    algorithm: str = "MD5",
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """``digest_response`` from HA1 = H(user:realm:password), what a server that keeps no password has."""
    h = _digest_hash(algorithm)
    if algorithm.upper().endswith("-SESS"):
        ha1 = h(f"{ha1}:{nonce}:{cnonce or ''}")
    ha2 = h(f"{method}:{uri}")
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}")
    if qop != "auth":
        raise ParseError(f"Digest qop {qop!r}: expected auth")
    return h(f"{ha1}:{nonce}:{nc or ''}:{cnonce or ''}:{qop}:{ha2}")
