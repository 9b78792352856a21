"""edge.paths: raw viewer paths to store keys, refusing anything outside the key grammar."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from camflow.keys import is_safe_key
from edge.errors import BadPath
from edge.paths import Kind, parse_live_path

EPOCH = "20261121T101500123Z"


@pytest.mark.parametrize(
    ("path", "kind", "key", "content_type"),
    [
        ("/live/cam1/master.m3u8", Kind.MASTER, "streams/cam1/master.m3u8", "application/vnd.apple.mpegurl"),
        ("/live/cam1/360p.m3u8", Kind.MEDIA, "streams/cam1/360p.m3u8", "application/vnd.apple.mpegurl"),
        (
            f"/live/Cam_1-x/{EPOCH}/source/init.mp4",
            Kind.INIT,
            f"streams/Cam_1-x/{EPOCH}/source/init.mp4",
            "video/mp4",
        ),
        (
            f"/live/cam1/{EPOCH}/360p/00000042.m4s",
            Kind.SEGMENT,
            f"streams/cam1/{EPOCH}/360p/00000042.m4s",
            "video/iso.segment",
        ),
    ],
)
def test_valid_paths_map_to_store_keys(path: str, kind: Kind, key: str, content_type: str) -> None:
    obj = parse_live_path(path)
    assert (obj.kind, obj.key, obj.content_type) == (kind, key, content_type)
    assert obj.stream == path.split("/")[2]


@pytest.mark.parametrize(
    ("path", "names"),
    [
        ("/live/..%2F..%2Fetc/master.m3u8", "stream name"),
        ("/live/%2e%2e/master.m3u8", "stream name"),
        ("/live/cam.1/master.m3u8", "stream name"),
        ("/live/-cam/master.m3u8", "stream name"),
        ("/live/cam1/..%2fsecret.m3u8", "rendition"),
        ("/live/cam1/Source.m3u8", "rendition"),
        ("/live/cam1/master.m3u", "playlist name"),
        ("/live/cam1/.m3u8", "rendition"),
        (f"/live/cam1/{EPOCH}/source/00000001.mp4", "object name"),
        (f"/live/cam1/{EPOCH}/source/1.m4s", "object name"),
        (f"/live/cam1/{EPOCH}/source/\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668.m4s", "object name"),
        (f"/live/cam1/{EPOCH}/source/%2e%2e", "object name"),
        ("/live/cam1/2026/source/init.mp4", "epoch"),
        (
            "/live/cam1/\u0662\u0660\u0662\u0666\u0661\u0661\u0662\u0661T"
            "\u0661\u0660\u0661\u0665\u0660\u0660\u0661\u0662\u0663Z/source/init.mp4",
            "epoch",
        ),
        (f"/live/cam1/{EPOCH}/../init.mp4", "rendition"),
        (f"/live/cam1/{EPOCH}/source/init.mp4/x", "components"),
        ("/live/cam1//master.m3u8", "components"),
        ("/live/cam1", "components"),
        ("/x/init.mp4", "not under /live/"),
    ],
)
def test_bad_paths_are_refused_with_a_message_naming_the_part(path: str, names: str) -> None:
    with pytest.raises(BadPath, match=names):
        parse_live_path(path)


@given(st.text(max_size=120))
def test_any_path_is_refused_or_maps_to_a_safe_key(tail: str) -> None:
    try:
        obj = parse_live_path("/live/" + tail)
    except BadPath:
        return
    assert is_safe_key(obj.key)
    assert obj.key.startswith(f"streams/{obj.stream}/")
