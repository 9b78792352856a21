"""Fuzz targets of the shared contracts: the event decoder, HLS playlists and tokens."""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path

from camflow.errors import EventDecodeError, TokenError
from camflow.events import decode
from camflow.hls.dates import parse_date_time, read_date_time
from camflow.hls.errors import PlaylistError
from camflow.hls.master import AudioRendition, Variant, parse_master, parse_master_audio, render_master
from camflow.hls.media import MediaPlaylist, Segment
from camflow.hls.rules import check_master, check_media, check_update
from camflow.hls.scan import is_master, map_uris, master_variants, media_facts, trim
from camflow.signing import LEGACY_KID, SigningKey
from camflow.tokens import Action, TokenSigner, _signed
from tests.fuzz.harness import target

EVENT_VECTORS = Path(__file__).parent.parent / "vectors" / "events" / "wire.json"


def _event_seeds() -> list[bytes]:
    return [bytes.fromhex(v) for v in json.loads(EVENT_VECTORS.read_text()).values()]


@target(
    "events",
    allowed=(EventDecodeError,),
    seeds=_event_seeds,
    dictionary=(b"CFE1", b'"type"', b'"v"', b"null", b"true", b"1e999", b"[", b"{", b'"video"', b'"audio"'),
)
def events(data: bytes) -> None:
    """An event from the bus (``camflow.events.decode``): the frame, the JSON header, every event type and
    accepted version, each field's JSON form (``camflow.jsonform``). Only EventDecodeError may come out."""
    decode(data)


EPOCH = 1_795_000_000.0
PDT_WORDS = (b"#EXT-X-PROGRAM-DATE-TIME:", b"2026-11-21T10:15:00.123Z", b"+01:00", b"9999-12-31T23:59:59Z")
HLS_WORDS = (
    b"#EXTM3U\n",
    b"#EXTINF:",
    b"#EXT-X-TARGETDURATION:",
    b"#EXT-X-MEDIA-SEQUENCE:",
    b"#EXT-X-DISCONTINUITY\n",
    b"#EXT-X-DISCONTINUITY-SEQUENCE:",
    b"#EXT-X-MAP:URI=",
    b"#EXT-X-GAP\n",
    b"#EXT-X-ENDLIST\n",
    b"#EXT-X-PLAYLIST-TYPE:VOD\n",
    b"#EXT-X-STREAM-INF:",
    b"#EXT-X-MEDIA:TYPE=AUDIO,",
    b"BANDWIDTH=",
    b"RESOLUTION=",
    b"CODECS=",
    b"URI=",
    b"1e400",
    b"nan",
    *PDT_WORDS,
)


def _media_seeds() -> list[bytes]:
    segments = tuple(
        Segment(f"e1/source/{n:08d}.m4s", 2.0, "e1/source/init.mp4", EPOCH + 2 * n, n == 3, n == 4)
        for n in range(1, 6)
    )
    live = MediaPlaylist(4, segments, media_sequence=1, discontinuity_sequence=2)
    vod = MediaPlaylist(4, segments, playlist_type="VOD", ended=True, discontinuity_sequence=None)
    return [live.render().encode(), vod.render().encode()]


def _master_text() -> str:
    variants = [
        Variant("720p.m3u8", 2_800_000, 2_500_000, "avc1.64001f,mp4a.40.2", 1280, 720, 30.0, "aac"),
        Variant("source.m3u8", 5_000_000, 4_000_000, "hvc1.1.6.L93.B0", 1920, 1080, 0.0),
    ]
    audio = [AudioRendition("aac", "audio", "audio.m3u8", "en", True, 2)]
    return render_master(variants, audio)


@target("hls-media", allowed=(PlaylistError,), seeds=_media_seeds, dictionary=HLS_WORDS, max_len=8192)
def hls_media(data: bytes) -> None:
    """A media playlist from the store, as each reader reads it: the packager (``MediaPlaylist.parse``,
    on the m3u8 library, with its date-times), the edge's scanner (``media_facts``, ``map_uris``, the DVR
    ``trim``) and the rule checks. Only PlaylistError may come out (the scanner raises none)."""
    text = data.decode("utf-8", "replace")
    media_facts(text)
    map_uris(text, lambda uri: uri + "?token=t")
    check_media(text)
    check_update(text, text)
    is_master(text)
    with contextlib.suppress(PlaylistError):
        MediaPlaylist.parse(text)
    trim(text, 6.0)


@target("hls-master", allowed=(PlaylistError,), seeds=lambda: [_master_text().encode()], dictionary=HLS_WORDS)
def hls_master(data: bytes) -> None:
    """A master playlist from the store: the packager's ``parse_master`` / ``parse_master_audio`` (on m3u8),
    the edge's ``master_variants`` and ``map_uris``, the rule check. Only PlaylistError may come out."""
    text = data.decode("utf-8", "replace")
    master_variants(text)
    map_uris(text, lambda uri: uri + "?dvr=60")
    check_master(text)
    with contextlib.suppress(PlaylistError):
        parse_master(text)
    parse_master_audio(text)


@target(
    "hls-dates",
    allowed=(PlaylistError,),
    seeds=lambda: [b"2026-11-21T10:15:00.123Z", b"2026-11-21T11:15:00+01:00", b"0001-01-01T00:00:00-23:59"],
    dictionary=PDT_WORDS,
    max_len=128,
)
def hls_dates(data: bytes) -> None:
    """A PROGRAM-DATE-TIME value (and the edge's ``?at=`` / ``?from=``): ``parse_date_time`` may only
    refuse it with DateTimeError; ``read_date_time`` never raises."""
    text = data.decode("utf-8", "replace")
    read_date_time(text)
    parse_date_time(text)


SECRET = b"fuzz-token-secret-0123456789"
SIGNER = TokenSigner(SECRET)


def _token_seeds() -> list[bytes]:
    now = 1_795_000_000.0
    tokens = [
        SIGNER.issue("cam1", Action.VIEW, 300, now),
        SIGNER.issue("cam1", Action.PUBLISH, None, now),
        SIGNER.issue("*", Action.ADMIN, 60, now),
    ]
    claims = [base64.urlsafe_b64decode(t.split(".")[1] + "==") for t in tokens]
    return [b"\x00" + t.encode() for t in tokens] + [b"\x01" + c for c in claims]


@target(
    "tokens",
    allowed=(TokenError,),
    seeds=_token_seeds,
    dictionary=(b"v1.", b'"s"', b'"a"', b'"e"', b'"view"', b'"publish"', b'"admin"', b"1e999", b"NaN"),
    max_len=1200,
)
def tokens(data: bytes) -> None:
    """A token as a viewer or publisher gives it (first byte 0: the rest is the token), and, past the
    signature check a fuzzer cannot forge, claims signed with the secret (first byte 1: the rest is the
    claims JSON). ``TokenSigner.verify`` may only refuse with TokenError (expired, scope, malformed)."""
    mode, body = data[:1], data[1:]
    if mode == b"\x01":
        claims = base64.urlsafe_b64encode(body).rstrip(b"=").decode()
        token = _signed(SigningKey(LEGACY_KID, SECRET), claims)
    else:
        token = body.decode("utf-8", "replace")
    for stream, action in (("cam1", Action.VIEW), ("*", Action.ADMIN)):
        with contextlib.suppress(TokenError):
            SIGNER.verify(token, stream, action, now=1_795_000_100.0)
