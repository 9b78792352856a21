from __future__ import annotations

import pytest

from camflow.errors import ConfigError
from camflow.keys import (
    check_stream_name,
    init_key,
    is_epoch,
    is_rendition,
    is_safe_key,
    is_stream_name,
    master_playlist_key,
    media_playlist_key,
    new_epoch,
    segment_key,
)

GOOD_STREAMS = {
    "one letter": "a",
    "one digit": "7",
    "dash and underscore": "cam-01_front",
    "64 characters": "a" * 64,
    "upper case": "LOBBY",
}
BAD_STREAMS = {
    "empty": "",
    "65 characters": "a" * 65,
    "dot": "cam.1",
    "dot-dot": "..",
    "slash": "cam/1",
    "backslash": "cam\\1",
    "leading dash": "-cam",
    "leading underscore": "_cam",
    "space": "cam 1",
    "arabic-indic digit": "cam\u0661",
    "fullwidth digit": "\uff11cam",
    "accented letter": "caméra",
    "trailing newline": "cam\n",
    "NUL": "cam\x00",
}


@pytest.mark.parametrize("name", GOOD_STREAMS.values(), ids=GOOD_STREAMS.keys())
def test_valid_stream_names(name: str) -> None:
    assert is_stream_name(name)
    assert check_stream_name(name) == name


@pytest.mark.parametrize("name", BAD_STREAMS.values(), ids=BAD_STREAMS.keys())
def test_invalid_stream_names(name: str) -> None:
    assert not is_stream_name(name)
    with pytest.raises(ConfigError, match="is not valid: expected 1-64 characters"):
        check_stream_name(name)


NEW_EPOCHS = {
    "unix epoch": (0.0, "19700101T000000000Z"),
    "milliseconds kept": (1_795_256_100.123, "20261121T101500123Z"),
    "milliseconds truncated": (1_795_256_100.9999, "20261121T101500999Z"),
    "leap day": (1_709_164_800.5, "20240229T000000500Z"),
}


@pytest.mark.parametrize(("now", "expected"), NEW_EPOCHS.values(), ids=NEW_EPOCHS.keys())
def test_new_epoch_format(now: float, expected: str) -> None:
    assert new_epoch(now) == expected
    assert is_epoch(expected)


def test_new_epoch_without_now_is_valid() -> None:
    assert is_epoch(new_epoch())


def test_epochs_sort_as_their_times() -> None:
    times = [
        0.0,
        0.001,
        0.999,
        1.0,
        59.5,
        3_600.0,
        86_399.999,
        1_000_000_000.0,
        1_795_256_100.123,
        4_102_444_800.0,
    ]
    epochs = [new_epoch(t) for t in times]
    assert sorted(epochs) == epochs
    assert len(set(epochs)) == len(epochs)


BAD_EPOCHS = {
    "empty": "",
    "no Z": "20261121T101500123",
    "seconds only": "20261121T101500Z",
    "lower-case t": "20261121t101500123Z",
    "arabic-indic digits": "\u0662\u0660\u0662\u0666" + "1121T101500123Z",
    "fullwidth digit": "2026112\uff11T101500123Z",
    "path": "../20261121T101500123Z",
}


@pytest.mark.parametrize("name", BAD_EPOCHS.values(), ids=BAD_EPOCHS.keys())
def test_invalid_epochs(name: str) -> None:
    assert not is_epoch(name)


def test_renditions() -> None:
    assert is_rendition("360p") and is_rendition("source") and is_rendition("a" * 32)
    for bad in ("master", "", "360P", "a" * 33, "-x", "36\u0660p", "a.b"):
        assert not is_rendition(bad), bad


SAFE_KEYS = ["streams/cam-1/master.m3u8", "a", "a/b.c/d_e-f", "streams/cam/20261121T101500123Z/360p/init.mp4"]
UNSAFE_KEYS = {
    "empty": "",
    "dot-dot": "..",
    "dot-dot component": "streams/../secret",
    "trailing dot-dot": "streams/..",
    "dot component": "streams/./a",
    "absolute": "/etc/passwd",
    "leading dot": ".hidden",
    "empty component": "streams//a",
    "trailing slash": "streams/",
    "backslash": "streams\\..\\a",
    "space": "a b",
    "unicode digit": "streams/\u0661",
    "newline": "a\n",
    "NUL": "a\x00b",
}


@pytest.mark.parametrize("key", SAFE_KEYS)
def test_safe_keys(key: str) -> None:
    assert is_safe_key(key)


@pytest.mark.parametrize("key", UNSAFE_KEYS.values(), ids=UNSAFE_KEYS.keys())
def test_unsafe_keys(key: str) -> None:
    assert not is_safe_key(key)


def test_key_layout() -> None:
    epoch = "20261121T101500123Z"
    assert init_key("cam", epoch, "360p") == f"streams/cam/{epoch}/360p/init.mp4"
    assert segment_key("cam", epoch, "360p", 42) == f"streams/cam/{epoch}/360p/00000042.m4s"
    assert media_playlist_key("cam", "360p") == "streams/cam/360p.m3u8"
    assert master_playlist_key("cam") == "streams/cam/master.m3u8"
    for key in (init_key("cam", epoch, "360p"), segment_key("cam", epoch, "source", 0)):
        assert is_safe_key(key)
