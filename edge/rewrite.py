"""Carry a viewer's token into every URI of an HLS playlist, so a player needs only the master URL.

Pure text in, text out. A URI is every non-blank line that is not a tag or comment, and every
``URI="..."`` attribute of a tag (EXT-X-MAP, EXT-X-MEDIA, EXT-X-KEY, EXT-X-PART, ...).

Absolute URIs with a scheme (``https://other/...``) or a network path (``//other/...``) point
at hosts the edge does not control, so they are left alone: the token is a bearer credential
and must not leak to another origin. Relative and absolute-path URIs get the token.
"""

from __future__ import annotations

import re
from urllib.parse import quote

TOKEN_PARAM = "token"
_URI_ATTR = re.compile(r'(?P<lead>[:,])URI="(?P<uri>[^"]*)"')
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def is_foreign(uri: str) -> bool:
    """True for a URI that names its own host (``scheme:`` or ``//host``)."""
    return uri.startswith("//") or _SCHEME.match(uri) is not None


def add_token_to_uri(uri: str, token: str) -> str:
    """``uri`` with ``token=<token>`` in its query (replacing any token already there)."""
    if not uri or is_foreign(uri):
        return uri
    rest, hash_mark, fragment = uri.partition("#")
    path, _, query = rest.partition("?")
    params = [p for p in query.split("&") if p and p != TOKEN_PARAM and not p.startswith(TOKEN_PARAM + "=")]
    params.append(f"{TOKEN_PARAM}={quote(token, safe='')}")
    return f"{path}?{'&'.join(params)}{hash_mark}{fragment}"


def _rewrite_line(line: str, token: str) -> str:
    body = line.removesuffix("\r")
    ending = line[len(body) :]
    stripped = body.strip()
    if not stripped:
        return line
    if stripped.startswith("#"):
        rewritten = _URI_ATTR.sub(lambda m: f'{m["lead"]}URI="{add_token_to_uri(m["uri"], token)}"', body)
        return rewritten + ending
    return add_token_to_uri(stripped, token) + ending


def add_token_to_playlist(playlist: str, token: str) -> str:
    """The playlist with the token carried into every URI; line endings (LF or CRLF) are kept."""
    return "\n".join(_rewrite_line(line, token) for line in playlist.split("\n"))
