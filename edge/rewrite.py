"""Carry a viewer's token into every URI of an HLS playlist, so a player needs only the master URL.

Pure text in, text out; ``camflow.hls.scan.map_uris`` finds the URIs. A URI is every non-blank
line that is not a tag or comment, and every ``URI="..."`` attribute of a tag (EXT-X-MAP,
EXT-X-MEDIA, EXT-X-KEY, EXT-X-PART, ...).

Absolute URIs with a scheme (``https://other/...``) or a network path (``//other/...``) point
at hosts the edge does not control, so they are left alone: the token is a bearer credential
and must not leak to another origin. Relative and absolute-path URIs get the token.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from camflow.hls.scan import map_uris

TOKEN_PARAM = "token"
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


def add_token_to_playlist(playlist: str, token: str) -> str:
    """The playlist with the token carried into every URI; line endings (LF or CRLF) are kept."""
    return map_uris(playlist, lambda uri: add_token_to_uri(uri, token))
