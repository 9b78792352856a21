"""ISO BMFF box helpers for the segment contract: split a fragmented MP4 into its init
section (``ftyp`` + ``moov``) and its media segment (``styp``/``moof``/``mdat``…), and read
or set the ``tfdt`` (baseMediaDecodeTime) of its fragments. Bytes in, bytes out; no I/O.

Why set ``tfdt`` ourselves: FFmpeg's mp4 muxer starts a new file's timeline at zero, and
with ``frag_discont`` it puts the first *presentation* time in ``tfdt``, which shifts a
stream with B-frames by its reorder delay on every remux. camflow owns the timeline: the
first sample's decode time is what the segment says it is.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping

from camflow.errors import MediaFormatError

# Options for FFmpeg's mp4 muxer that give a CMAF-style fragmented MP4: an init section
# without samples, then one fragment per keyframe, data offsets relative to each moof.
MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof+cmaf"

_MEDIA_BOXES = {b"styp", b"sidx", b"moof", b"prft", b"emsg"}


def iter_boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """Yield (type, offset, size) of each top-level box in data[start:end]."""
    pos, stop = start, len(data) if end is None else end
    while pos < stop:
        if stop - pos < 8:
            raise MediaFormatError(
                f"truncated box header at offset {pos}: {stop - pos} bytes left, expected 8"
            )
        size, kind = struct.unpack_from(">I4s", data, pos)
        if size == 1:
            if stop - pos < 16:
                raise MediaFormatError(f"truncated 64-bit box size at offset {pos}")
            size = struct.unpack_from(">Q", data, pos + 8)[0]
        elif size == 0:
            size = stop - pos
        if size < 8 or pos + size > stop:
            raise MediaFormatError(f"box {kind!r} at offset {pos} has size {size}, past the end ({stop})")
        yield kind, pos, size
        pos += size


def split_init(data: bytes) -> tuple[bytes, bytes]:
    """(init section, media segment) of a fragmented MP4 written by one muxer run."""
    for kind, offset, _ in iter_boxes(data):
        if kind in _MEDIA_BOXES:
            init, media = data[:offset], data[offset:]
            if b"moov" not in init or b"moof" not in media:
                raise MediaFormatError("fragmented MP4 has no moov before its first fragment")
            return init, media
    raise MediaFormatError("MP4 has no movie fragment (moof): expected a fragmented MP4")


def _child(data: bytes, parent: tuple[int, int], kind: bytes) -> tuple[int, int] | None:
    offset, size = parent
    for k, o, s in iter_boxes(data, offset + 8, offset + size):
        if k == kind:
            return o, s
    return None


def _check_tfdt_size(data: bytes, tfdt: tuple[int, int]) -> None:
    offset, size = tfdt
    expected = 20 if size > 8 and data[offset + 8] == 1 else 16  # header, version+flags, 64/32-bit time
    if size < expected:
        raise MediaFormatError(f"tfdt at offset {offset} has size {size}, expected {expected}")


def _trafs(data: bytes) -> Iterator[tuple[int, tuple[int, int]]]:
    """(track_ID, tfdt box) of every track fragment of every fragment, in order."""
    for kind, offset, size in iter_boxes(data):
        if kind != b"moof":
            continue
        found = False
        for k, o, s in iter_boxes(data, offset + 8, offset + size):
            if k != b"traf":
                continue
            tfdt = _child(data, (o, s), b"tfdt")
            if tfdt is None:
                raise MediaFormatError(f"fragment at offset {offset} has no traf/tfdt")
            _check_tfdt_size(data, tfdt)
            tfhd = _child(data, (o, s), b"tfhd")
            found = True  # a traf without a complete tfhd counts as track 0
            yield (struct.unpack_from(">I", data, tfhd[0] + 12)[0] if tfhd and tfhd[1] >= 16 else 0), tfdt
        if not found:
            raise MediaFormatError(f"fragment at offset {offset} has no traf/tfdt")


def base_media_decode_times(data: bytes, track_id: int | None = None) -> list[int]:
    """The ``tfdt`` baseMediaDecodeTime of each fragment's first track (or of track ``track_id``)."""
    out: list[int] = []
    last_moof = -1
    for track, tfdt in _trafs(data):
        moof = _moof_of(data, tfdt[0])
        if (track_id is None and moof == last_moof) or (track_id is not None and track != track_id):
            continue
        last_moof = moof
        version = data[tfdt[0] + 8]
        fmt = ">Q" if version == 1 else ">I"
        out.append(struct.unpack_from(fmt, data, tfdt[0] + 12)[0])
    return out


def _moof_of(data: bytes, position: int) -> int:
    for kind, offset, size in iter_boxes(data):
        if kind == b"moof" and offset <= position < offset + size:
            return offset
    return -1


def shift_base_media_decode_time(media: bytes, first_dts: int | Mapping[int, int]) -> bytes:
    """Set each track's first ``tfdt`` to its first decode time and move its later ones by as much.

    ``first_dts`` is one value for every track (a single-track file) or ``{track_ID: first dts}``, each
    in its own track's timescale; a track missing from the mapping is an error. Only 64-bit (version 1)
    ``tfdt`` boxes are rewritten in place, so no box changes size and every data offset stays valid;
    FFmpeg writes version 1.
    """
    out = bytearray(media)
    deltas: dict[int, int] = {}
    for track, tfdt in _trafs(media):
        if media[tfdt[0] + 8] != 1:
            raise MediaFormatError(f"tfdt at offset {tfdt[0]} is version {media[tfdt[0] + 8]}, expected 1")
        current = struct.unpack_from(">Q", media, tfdt[0] + 12)[0]
        if track not in deltas:
            if isinstance(first_dts, int):
                target = first_dts
            elif track in first_dts:
                target = first_dts[track]
            else:
                raise MediaFormatError(f"track {track} has no first decode time: given {sorted(first_dts)}")
            deltas[track] = target - current
        value = current + deltas[track]
        if value < 0:
            raise MediaFormatError(f"tfdt would become negative ({value})")
        if value >= 1 << 64:
            raise MediaFormatError(f"tfdt would become {value}, past the 64-bit range")
        struct.pack_into(">Q", out, tfdt[0] + 12, value)
    if not deltas:
        raise MediaFormatError("media segment has no fragment (moof)")
    return bytes(out)


def placed(fragmented: bytes, first_dts: int | Mapping[int, int]) -> tuple[bytes, bytes]:
    """(init, media) of one muxer run's output, each track's fragments moved to start at its first dts."""
    init, media = split_init(fragmented)
    return init, shift_base_media_decode_time(media, first_dts)


def shift_composition_offsets(media: bytes, track_id: int, delta: int) -> bytes:
    """Add ``delta`` to every sample's composition offset (``trun``) of track ``track_id``.

    FFmpeg's mp4 muxer (with ``cmaf``'s negative offsets) writes each file's offsets relative to its first
    sample's, so a file starting on a B-frame-reordered picture is presented shifted against one starting
    on the IDR; this moves them back. In place: no box changes size. A ``trun`` without offsets can only
    take ``delta`` 0; a version-0 one (unsigned offsets) no negative result.
    """
    out = bytearray(media)
    for track, tfdt in _trafs(media):
        if track != track_id or delta == 0:
            continue
        moof = _moof_of(media, tfdt[0])
        traf = next(
            (o, s)
            for k, o, s in iter_boxes(media, moof + 8, moof + struct.unpack_from(">I", media, moof)[0])
            if k == b"traf" and o <= tfdt[0] < o + s
        )
        for kind, offset, size in iter_boxes(media, traf[0] + 8, traf[0] + traf[1]):
            if kind == b"trun":
                _shift_trun(out, offset, size, delta)
    return bytes(out)


def _shift_trun(out: bytearray, offset: int, size: int, delta: int) -> None:
    version, flags = out[offset + 8], int.from_bytes(out[offset + 9 : offset + 12], "big")
    if not flags & 0x800:
        raise MediaFormatError(f"trun at offset {offset} has no composition offsets to move by {delta}")
    count = struct.unpack_from(">I", out, offset + 12)[0]
    fields = sum(1 for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit)
    pos = offset + 16 + 4 * bool(flags & 0x1) + 4 * bool(flags & 0x4)
    pos += 4 * sum(1 for bit in (0x100, 0x200, 0x400) if flags & bit)  # the offset is a sample's last field
    if count and pos + ((count - 1) * fields + 1) * 4 > offset + size:
        raise MediaFormatError(f"trun at offset {offset} holds {count} samples, past its size {size}")
    fmt = ">i" if version else ">I"
    for _ in range(count):
        value = struct.unpack_from(fmt, out, pos)[0] + delta
        if not version and value < 0:
            raise MediaFormatError(f"trun at offset {offset} (version 0) would get a negative offset {value}")
        struct.pack_into(fmt, out, pos, value)
        pos += 4 * fields


_TRUN_FIELDS = ((0x100, "duration"), (0x200, "size"), (0x400, "flags"), (0x800, "cts"))


def _truns(data: bytes, track_id: int | None) -> Iterator[tuple[int, int, int, int]]:
    """(offset of the trun's first sample record, sample count, flags, version) of every trun of
    ``track_id``'s track fragments (every track's when None), in order."""
    for kind, offset, size in iter_boxes(data):
        if kind != b"moof":
            continue
        for k, o, s in iter_boxes(data, offset + 8, offset + size):
            if k != b"traf":
                continue
            tfhd = _child(data, (o, s), b"tfhd")
            track = struct.unpack_from(">I", data, tfhd[0] + 12)[0] if tfhd and tfhd[1] >= 16 else 0
            if track_id is not None and track != track_id:
                continue
            for kk, oo, ss in iter_boxes(data, o + 8, o + s):
                if kk != b"trun":
                    continue
                if ss < 16:
                    raise MediaFormatError(f"trun at offset {oo} has size {ss}, expected 16 or more")
                version, flags = data[oo + 8], int.from_bytes(data[oo + 9 : oo + 12], "big")
                count = struct.unpack_from(">I", data, oo + 12)[0]
                first = oo + 16 + (4 if flags & 0x1 else 0) + (4 if flags & 0x4 else 0)
                record = 4 * sum(1 for bit, _ in _TRUN_FIELDS if flags & bit)
                if first + count * record > oo + ss:
                    raise MediaFormatError(f"trun at offset {oo} holds fewer than its {count} samples")
                yield first, count, flags, version


def composition_offsets(data: bytes, track_id: int | None = None) -> list[int]:
    """Each sample's composition time offset (pts - dts, from ``trun``; 0 where the field is absent)
    of ``track_id``'s fragments in ``data`` (every track's when None), in order.

    A demuxer reading one fragment alone may shift them (FFmpeg moves negative offsets up so the
    file's first picture is not before its decode time); these are the stored values, which a
    player applies to the fragment's decode times as they are.
    """
    out: list[int] = []
    for first, count, flags, version in _truns(data, track_id):
        record = 4 * sum(1 for bit, _ in _TRUN_FIELDS if flags & bit)
        at = 4 * sum(1 for bit, _ in _TRUN_FIELDS[:3] if flags & bit)
        fmt = ">i" if version == 1 else ">I"
        for i in range(count):
            out.append(struct.unpack_from(fmt, data, first + i * record + at)[0] if flags & 0x800 else 0)
    return out
