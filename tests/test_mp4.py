from __future__ import annotations

import contextlib
import json
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from camflow.errors import MediaFormatError
from camflow.mp4 import (
    MOVFLAGS,
    base_media_decode_times,
    iter_boxes,
    placed,
    shift_base_media_decode_time,
    split_init,
)

FFMPEG_TIMEOUT = 60


def ffmpeg_clip(path: Path, *flags: str) -> bytes:
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", "2"),
            *("-c:v", "libx264", "-g", "30", *flags, "-f", "mp4", str(path)),
        ],
        check=True,
        timeout=FFMPEG_TIMEOUT,
    )
    return path.read_bytes()


@pytest.fixture(scope="module")
def fragmented(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return ffmpeg_clip(tmp_path_factory.mktemp("mp4") / "frag.mp4", "-movflags", MOVFLAGS)


def probe(path: Path) -> tuple[int, list[dict[str, str]]]:
    """(timescale denominator, packets) of the first video stream."""
    out = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=time_base"),
            *("-show_entries", "packet=pts,dts,flags", "-of", "json", str(path)),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=FFMPEG_TIMEOUT,
    )
    info = json.loads(out.stdout)
    return int(info["streams"][0]["time_base"].split("/")[1]), info["packets"]


def box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def test_split_init(fragmented: bytes) -> None:
    init, media = split_init(fragmented)
    assert init + media == fragmented
    assert [k for k, _, _ in iter_boxes(init)] == [b"ftyp", b"moov"]
    kinds = [k for k, _, _ in iter_boxes(media)]
    assert kinds[0] == b"moof" and kinds.count(b"moof") == kinds.count(b"mdat") == 2


def test_base_media_decode_times_of_ffmpeg_output(fragmented: bytes) -> None:
    _, media = split_init(fragmented)
    times = base_media_decode_times(media)
    assert times[0] == 0 and len(times) == 2 and times[1] > 0
    assert base_media_decode_times(fragmented) == times  # the init section has no moof


def test_shift_moves_every_fragment_by_the_same_delta(fragmented: bytes) -> None:
    _, media = split_init(fragmented)
    before = base_media_decode_times(media)
    shifted = shift_base_media_decode_time(media, 1_000_000)
    after = base_media_decode_times(shifted)
    assert after[0] == 1_000_000
    assert [a - b for a, b in zip(after, before, strict=True)] == [1_000_000 - before[0]] * len(before)
    assert len(shifted) == len(media)
    changed = [i for i, (a, b) in enumerate(zip(media, shifted, strict=True)) if a != b]
    assert len(changed) <= 8 * len(before)  # only the tfdt fields move
    # And back again: a shift to an earlier time moves every fragment back.
    assert base_media_decode_times(shift_base_media_decode_time(shifted, before[0])) == before


def test_placed_probes_with_the_new_start(fragmented: bytes, tmp_path: Path) -> None:
    original = tmp_path / "original.mp4"
    original.write_bytes(fragmented)
    timescale, packets = probe(original)
    delta = 10 * timescale
    init, media = placed(fragmented, delta)
    assert init == split_init(fragmented)[0]
    moved = tmp_path / "moved.mp4"
    moved.write_bytes(init + media)
    _, moved_packets = probe(moved)
    assert len(moved_packets) == len(packets) == 60
    assert moved_packets[0]["flags"].startswith("K")
    for a, b in zip(packets, moved_packets, strict=True):
        assert (int(b["pts"]) - int(a["pts"]), int(b["dts"]) - int(a["dts"])) == (delta, delta)


def test_shift_refuses_a_negative_time(fragmented: bytes) -> None:
    _, media = split_init(fragmented)
    with pytest.raises(MediaFormatError, match="negative"):
        shift_base_media_decode_time(media, -1)


def test_shift_refuses_a_time_past_64_bits(fragmented: bytes) -> None:
    _, media = split_init(fragmented)
    with pytest.raises(MediaFormatError, match="64-bit"):
        shift_base_media_decode_time(media, (1 << 64) - 1)


def tfdt_v0(value: int) -> bytes:
    return box(b"tfdt", b"\x00\x00\x00\x00" + struct.pack(">I", value))


def test_version_0_tfdt_is_read_but_not_rewritten() -> None:
    media = box(b"moof", box(b"traf", tfdt_v0(1234))) + box(b"mdat", b"x")
    assert base_media_decode_times(media) == [1234]
    with pytest.raises(MediaFormatError, match="version 0, expected 1"):
        shift_base_media_decode_time(media, 0)


def test_64_bit_box_size_is_followed() -> None:
    large = struct.pack(">I4sQ", 1, b"free", 24) + b"\x00" * 8
    tfdt_v1 = box(b"tfdt", b"\x01\x00\x00\x00" + struct.pack(">Q", 7))
    media = large + box(b"moof", box(b"traf", tfdt_v1))
    assert base_media_decode_times(media) == [7]
    assert base_media_decode_times(shift_base_media_decode_time(media, 70)) == [70]


def test_not_fragmented_mp4_is_refused(tmp_path: Path) -> None:
    plain = ffmpeg_clip(tmp_path / "plain.mp4")
    with pytest.raises(MediaFormatError, match="no movie fragment"):
        split_init(plain)


BAD = {
    "empty": (b"", "no movie fragment"),
    "seven bytes": (b"\x00\x00\x00\x08moo", "truncated box header"),
    "box past the end": (box(b"moof", b"x" * 10)[:-1], "past the end"),
    "box smaller than its header": (b"\x00\x00\x00\x04moof", "has size 4"),
    "truncated 64-bit size": (struct.pack(">I4s", 1, b"moof") + b"\x00\x00", "truncated 64-bit box size"),
    "moof without moov": (box(b"ftyp", b"isom") + box(b"moof", b""), "no moov before its first fragment"),
    "garbage": (b"GARBAGE!" * 100, "has size"),
}


@pytest.mark.parametrize(("data", "message"), BAD.values(), ids=BAD.keys())
def test_split_init_refuses_bad_input(data: bytes, message: str) -> None:
    with pytest.raises(MediaFormatError, match=message):
        split_init(data)


BAD_FRAGMENTS = {
    "moof without traf": (box(b"moof", box(b"mfhd", b"\x00" * 8)), "has no traf/tfdt"),
    "traf without tfdt": (box(b"moof", box(b"traf", box(b"tfhd", b"\x00" * 8))), "has no traf/tfdt"),
    "empty tfdt": (box(b"moof", box(b"traf", box(b"tfdt", b""))), "has size 8, expected 16"),
    "short v1 tfdt": (box(b"moof", box(b"traf", box(b"tfdt", b"\x01\x00\x00\x00\x00"))), "expected 20"),
    "child past its parent": (box(b"moof", struct.pack(">I4s", 64, b"traf")), "past the end"),
}


@pytest.mark.parametrize(("media", "message"), BAD_FRAGMENTS.values(), ids=BAD_FRAGMENTS.keys())
def test_bad_fragments(media: bytes, message: str) -> None:
    with pytest.raises(MediaFormatError, match=message):
        base_media_decode_times(media)
    with pytest.raises(MediaFormatError, match=message):
        shift_base_media_decode_time(media, 0)


@pytest.mark.parametrize("cut", [1, 8, 100, 1000])
def test_truncated_file_is_refused(fragmented: bytes, cut: int) -> None:
    with pytest.raises(MediaFormatError):
        placed(fragmented[:-cut], 0)


def test_media_without_fragment_is_refused() -> None:
    with pytest.raises(MediaFormatError, match="no fragment"):
        shift_base_media_decode_time(box(b"styp", b"msdh"), 0)


@settings(database=None, max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_files_raise_only_media_format_error(fragmented: bytes, data: st.DataObject) -> None:
    buf = bytearray(fragmented)
    for _ in range(data.draw(st.integers(1, 8))):  # in ftyp, moov and the first moof, not the picture
        buf[data.draw(st.integers(0, 1200))] = data.draw(st.integers(0, 255))
    end = data.draw(st.sampled_from([len(buf), len(buf) - 1, 1200, 900]))
    mutated = bytes(buf[:end])
    for call in (split_init, base_media_decode_times, lambda d: shift_base_media_decode_time(d, 5)):
        with contextlib.suppress(MediaFormatError):
            call(mutated)


@settings(database=None, max_examples=300)
@given(st.binary(max_size=256))
def test_arbitrary_bytes_raise_only_media_format_error(data: bytes) -> None:
    for call in (split_init, base_media_decode_times, lambda d: shift_base_media_decode_time(d, 5)):
        with contextlib.suppress(MediaFormatError):
            call(data)
