"""RTSP URLs: path, query and credentials, and the SETUP URL forms real publishers send.

A SETUP URL is the ANNOUNCE URL plus ``/`` plus the media's ``a=control``. With a query in the URL,
ffmpeg puts the control after the query (``cam1?token=T/streamid=0``) and GStreamer before it
(``cam1/stream=0?token=T``); :func:`split_setup_url` accepts both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from ingest.errors import ParseError

DEFAULT_PORTS = {"rtsp": 554, "rtspt": 554, "rtsps": 322}


def parse_query(query: str) -> dict[str, str]:
    """``a=1&b=2`` to a dict, percent-decoded but ``+`` kept (tokens are often base64); last value wins."""
    result: dict[str, str] = {}
    for item in query.split("&"):
        if item:
            key, _, value = item.partition("=")
            result[unquote(key)] = unquote(value)
    return result


@dataclass(frozen=True)
class RtspUrl:
    scheme: str  # lower case: rtsp, rtsps or rtspt
    host: str
    port: int | None
    path: str  # without leading or trailing slash, not percent-decoded: "cam1", "site/cam1/stream=0"
    query_string: str = ""  # raw, without the "?"
    username: str | None = None
    password: str | None = None
    query: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[self.scheme]

    @classmethod
    def parse(cls, url: str) -> RtspUrl:
        try:
            parts = urlsplit(url, allow_fragments=False)
            port = parts.port
        except ValueError as exc:
            raise ParseError(f"RTSP URL {url[:120]!r}: {exc}; expected rtsp://host[:port]/path") from None
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ParseError(f"RTSP URL {url[:120]!r}: expected rtsp://[user:pass@]host[:port]/path")
        return cls(
            scheme=scheme,
            host=parts.hostname,
            port=port,
            path=parts.path.strip("/"),
            query_string=parts.query,
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
            query=parse_query(parts.query),
        )

    def __str__(self) -> str:
        userinfo = ""
        if self.username is not None:
            userinfo = quote(self.username, safe="")
            if self.password is not None:
                userinfo += ":" + quote(self.password, safe="")
            userinfo += "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        query = f"?{self.query_string}" if self.query_string else ""
        return f"{self.scheme}://{userinfo}{host}{port}/{self.path}{query}"


@dataclass(frozen=True)
class SetupTarget:
    path: str  # the stream path, without slashes at either end
    query: Mapping[str, str] = field(hash=False, compare=False)
    control: str | None  # the matched ``a=control`` value; None for the aggregate URL or no match

    @property
    def matched(self) -> bool:
        return self.control is not None


def split_setup_url(url: str | RtspUrl, announced_path: str, controls: Sequence[str]) -> SetupTarget:
    """Split a SETUP URL into stream path, query and the ``a=control`` it names, in either order.

    ``controls`` are the ``a=control`` values of the announced media: relative (``streamid=0``) or absolute
    (``rtsp://...``, must then match the URL without its query). Without a match the URL's own path and
    query come back with ``control=None``, for the caller to compare with ``announced_path``.
    """
    parsed = url if isinstance(url, RtspUrl) else RtspUrl.parse(url)
    announced = announced_path.strip("/")
    for control in controls:
        if "://" in control:
            absolute = RtspUrl.parse(control)
            if _without_query(absolute) == _without_query(parsed):
                return SetupTarget(announced, parsed.query, control)
            continue
        suffix = control.strip("/")
        if not suffix:
            continue
        if parsed.path == f"{announced}/{suffix}":  # GStreamer: path/control?query
            return SetupTarget(announced, parsed.query, control)
        if parsed.path == announced and parsed.query_string.endswith(
            "/" + suffix
        ):  # ffmpeg: path?query/control
            query_string = parsed.query_string[: -len(suffix) - 1]
            return SetupTarget(announced, parse_query(query_string), control)
    return SetupTarget(parsed.path, parsed.query, None)


def _without_query(url: RtspUrl) -> str:
    return f"{url.host}:{url.effective_port}/{url.path}"
