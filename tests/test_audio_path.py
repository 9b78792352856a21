"""ingest.media.audio_path with parts (low-latency HLS): how long a part waits for its audio.

A part waits for the audio of its span at most ``part_hold`` seconds (``PART_HOLD_SECONDS``, at most a
quarter of the part target) after it was cut; then it leaves with the audio that has arrived, and the
audio arriving later goes into the next part. A segment cut into parts leaves with its last part and
holds its parts' audio. Driven here on a simulated clock, as the publisher drives it (its timer fires at
``due``): a 25 fps camera without B-frames and AAC at 48 kHz whose packets carry 8 frames each (as
ffmpeg's RTP muxer sends them by default), so audio arrives up to 170 ms after it was captured.
"""

from __future__ import annotations

import heapq
import itertools
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from ingest.codecs.aac import AudioConfig, AudioUnit, silent_unit
from ingest.media.audio_path import AudioPath, Cut
from ingest.media.cuts import CutPart, CutSegment
from ingest.media.segmenter import TIMELINE_ORIGIN, Segmenter
from ingest.media.units import AccessUnit

RATE = 48_000
AAC_FRAME = 1024
FPS = 25
VIDEO_PTS0 = 900_000  # the camera's RTP timestamp of its first frame
WALL0 = 1_000.0  # the camera's clock (UNIX seconds) at that frame


@dataclass
class Out:
    """What left the audio path, with the (simulated) time each left and was cut."""

    parts: list[tuple[CutPart, float, float]] = field(default_factory=list)  # (part, cut at, left at)
    segments: list[tuple[CutSegment, float]] = field(default_factory=list)  # (segment, left at)
    order: list[str] = field(default_factory=list)


class Camera:
    """A publish session's media path without the publisher: the segmenter, the audio path and the
    timer, on a simulated clock (seconds since the first frame)."""

    def __init__(self, part_target: float = 0.2, gop_frames: int = FPS) -> None:
        self.now = 0.0
        self.segmenter = Segmenter(target=1.0, part_target=part_target)
        self.path = AudioPath(AudioConfig.aac_lc(RATE, 1), self.segmenter, clock=lambda: self.now)
        self.path.on_video_sender_report(WALL0, VIDEO_PTS0)
        self.path.on_sender_report(WALL0, 0)  # audio RTP 0 was captured with the first frame
        self.gop = gop_frames
        self.out = Out()
        self._cut_at: dict[tuple[int, int], float] = {}

    def _left(self, cuts: list[Cut]) -> None:
        for cut in cuts:
            if isinstance(cut, CutPart):
                self.out.parts.append((cut, self._cut_at[(cut.seq, cut.part)], self.now))
                self.out.order.append(f"p{cut.seq}.{cut.part}")
            else:
                self.out.segments.append((cut, self.now))
                self.out.order.append(f"s{cut.seq}")

    def advance(self, to: float) -> None:
        """Let the clock run to ``to``, the timer releasing what is due on the way."""
        while (due := self.path.due()) is not None and due <= to:
            self.now = max(self.now, due)
            self._left(self.path.release())
        self.now = max(self.now, to)

    def video(self, frame: int) -> None:
        unit = AccessUnit(VIDEO_PTS0 + frame * 90_000 // FPS, (b"\x41\x9a",), frame % self.gop == 0)
        if unit.is_idr:
            self.path.on_video_idr(unit.pts)
        segments = self.segmenter.push(unit)
        for part in self.segmenter.take_parts():
            self._cut_at[(part.seq, part.part)] = self.now
            self._left(self.path.parts(part))
        for segment in segments:
            self._left(self.path.segments(segment))

    def audio(self, frame: int, data: bytes = b"a") -> None:
        self._left(self.path.on_unit(AudioUnit(frame * AAC_FRAME, data)))

    def end(self) -> None:
        for part in self.segmenter.take_parts():
            self._cut_at[(part.seq, part.part)] = self.now
        segments = self.segmenter.flush()
        for part in self.segmenter.take_parts():
            self._cut_at[(part.seq, part.part)] = self.now
            self._left(self.path.parts(part))
        for segment in segments:
            self._left(self.path.segments(segment))
        self._left(self.path.flush())


def arrivals(
    seconds: float, per_packet: int, delay: float = 0.005, audio_delay: float = 0.0
) -> Iterator[tuple[float, str, int]]:
    """(arrival time, kind, index), in arrival order: a video frame arrives ``delay`` after its capture;
    an audio packet of ``per_packet`` AAC frames ``delay`` (and ``audio_delay``) after its last frame
    was captured."""
    video = ((i / FPS + delay, "v", i) for i in range(int(seconds * FPS)))
    frames = int(seconds * RATE / AAC_FRAME)
    audio = (
        ((f - f % per_packet + per_packet) * AAC_FRAME / RATE + delay + audio_delay, "a", f)
        for f in range(frames - frames % per_packet)
    )
    return heapq.merge(video, audio)


def play(
    camera: Camera, seconds: float, per_packet: int, skip_audio: range = range(0), audio_delay: float = 0.0
) -> Camera:
    """The camera's arrivals; the timer runs between them, not between the units of one packet."""
    last = -1.0
    for at, kind, index in arrivals(seconds, per_packet, audio_delay=audio_delay):
        if at > last:
            camera.advance(at)
            last = at
        if kind == "v":
            camera.video(index)
        elif index not in skip_audio:
            camera.audio(index)
    camera.end()
    return camera


def audio_of(cuts: list[CutPart]) -> list[tuple[int, bytes]]:
    return [(a.time, a.data) for p in cuts for a in p.audio]


def test_part_hold_is_at_most_a_quarter_of_the_part_target() -> None:
    assert Camera(0.2).path.part_hold == pytest.approx(0.05)
    assert Camera(0.1).path.part_hold == pytest.approx(0.025)
    assert Camera(1.0).path.part_hold == pytest.approx(0.05)


def in_time(camera: Camera, frames: range) -> None:
    """Video frames ``frames``, each with the AAC frames captured before it, arriving as captured."""
    audio = 0
    for frame in frames:
        camera.advance(frame / FPS)
        while (audio + 1) * AAC_FRAME / RATE <= frame / FPS:
            camera.audio(audio)
            audio += 1
        camera.video(frame)


def test_a_part_leaves_after_the_hold_with_the_audio_that_arrived() -> None:
    camera = Camera()
    in_time(camera, range(26))  # segment 0 (cut by the IDR at 1 s) and its parts left
    assert camera.out.order[-2:] == ["p0.4", "s0"]
    assert camera.out.parts[-1][0].audio[-1].time == RATE + AAC_FRAME * 45  # the last ending by 1 s
    for frame in range(26, 31):  # part 1.0 (frames 25-29) is cut when frame 30 arrives, at 1.2 s
        camera.advance(frame / FPS)
        camera.video(frame)
    for frame in (46, 47):  # 2 of the 10 AAC frames ending in (1 s, 1.2 s] arrived
        camera.audio(frame)
    assert camera.out.order[-1] == "s0" and camera.path.due() == pytest.approx(1.2 + 0.05)
    camera.advance(1.249)
    assert camera.out.order[-1] == "s0"  # held...
    camera.advance(1.25)  # ... for 50 ms: then it leaves with what arrived
    part, cut_at, left_at = camera.out.parts[-1]
    assert (part.seq, part.part, cut_at, left_at) == (1, 0, 1.2, 1.25)
    assert [a.time for a in part.audio] == [RATE + AAC_FRAME * 46, RATE + AAC_FRAME * 47]
    for frame in range(48, 65):  # part 1.0's late audio (48-55: the next part takes it), and part 1.1's
        camera.audio(frame)
    for frame in range(31, 36):
        camera.advance(frame / FPS)
        camera.video(frame)  # frame 35 cuts part 1.1, whose audio is all in: it leaves at once
    second, cut_at, left_at = camera.out.parts[-1]
    assert (second.part, cut_at, left_at) == (1, 1.4, 1.4)
    assert [a.time for a in second.audio] == [RATE + AAC_FRAME * i for i in range(48, 65)]
    assert camera.path.track.counters.audio_late_dropped == 0


def test_a_part_leaves_as_soon_as_the_audio_before_its_end_is_in() -> None:
    """The AAC frame that straddles a part's end goes to the next part: it is not waited for."""
    camera = Camera()
    in_time(camera, range(26))
    for frame in range(26, 31):
        camera.advance(frame / FPS)
        camera.video(frame)
    for frame in range(46, 55):  # AAC frames 46-55 end in (1 s, 1.2 s]; 56 (1.1947-1.216 s) straddles it
        camera.audio(frame)
    assert camera.out.order[-1] == "s0"
    camera.audio(55)
    part, cut_at, left_at = camera.out.parts[-1]
    assert (part.seq, part.part) == (1, 0) and left_at == cut_at and len(part.audio) == 10


def test_late_audio_costs_parts_at_most_the_hold_and_segments_keep_their_samples() -> None:
    camera = play(Camera(), 6.0, per_packet=8)  # audio 170 ms late at worst
    parts = camera.out.parts
    assert len(parts) == 30
    waits = [left - cut for _, cut, left in parts]
    # the stream's first part waits for its audio (a stream starts with audio), the others the hold
    assert parts[0][0].audio[0].data == b"a" and waits[0] > camera.path.part_hold
    assert max(waits[1:]) <= camera.path.part_hold + 1e-9
    assert sum(w > 0.04 for w in waits) >= 10  # many did wait the whole hold: audio is late
    by_seq = {
        seq: [p for p, _, _ in group] for seq, group in itertools.groupby(parts, key=lambda p: p[0].seq)
    }
    assert len(camera.out.segments) == len(by_seq) == 6
    left_at = {(p.seq, p.part): left for p, _, left in parts}
    for segment, at in camera.out.segments:
        # the parts of a segment hold, in order, exactly its audio samples; it leaves with its last part
        assert audio_of(by_seq[segment.seq]) == [(a.time, a.data) for a in segment.audio]
        assert at == left_at[(segment.seq, len(by_seq[segment.seq]) - 1)]
        assert (
            camera.out.order.index(f"s{segment.seq}")
            == camera.out.order.index(f"p{segment.seq}.{len(by_seq[segment.seq]) - 1}") + 1
        )
    audio = audio_of([p for p, _, _ in parts])
    # every AAC frame, in order, none dropped and no silence: late audio went into the next part
    assert [t for t, _ in audio] == [RATE + AAC_FRAME * i for i in range(len(audio))]
    sent = sum(kind == "a" for _, kind, _ in arrivals(6.0, 8))
    assert {d for _, d in audio} == {b"a"} and len(audio) == sent
    counters = camera.path.track.counters
    assert counters.audio_late_dropped == counters.audio_silence_inserted == 0
    # a part's audio starts at most a packet (8 frames) before its video
    for part, _, _ in parts:
        if part.audio:
            start = (part.start - TIMELINE_ORIGIN) * RATE // 90_000 + RATE
            assert start - 9 * AAC_FRAME < part.audio[0].time <= start


def test_parts_wait_for_audio_more_than_a_part_late() -> None:
    """A slow audio path (G.711 re-encoded to AAC: 128 ms frames, ~0.3 s late): a part does not leave
    after the hold with audio ending more than a part target before it, it waits for it, so its audio
    never lags its video by more than a part (a player would stall on the audio)."""
    camera = play(Camera(), 4.0, per_packet=8, audio_delay=0.3)
    parts = camera.out.parts
    for part, cut, left in parts[:-1]:
        end = audio_of([part])[-1][0] + AAC_FRAME if part.audio else None
        part_end = (part.start + part.duration - TIMELINE_ORIGIN) * RATE // 90_000 + RATE
        assert end is not None and part_end - end < 0.2 * RATE + AAC_FRAME, (part.seq, part.part)
        assert left - cut <= AudioPath.HOLD_SECONDS
    assert statistics.median(left - cut for _, cut, left in parts) > 0.1  # they waited
    audio = audio_of([p for p, _, _ in parts])
    assert [t for t, _ in audio] == [RATE + AAC_FRAME * i for i in range(len(audio))]


def test_audio_in_time_leaves_parts_at_once() -> None:
    camera = play(Camera(), 3.0, per_packet=1)  # one AAC frame a packet, 5 ms after it was captured
    assert all(left == cut for _, cut, left in camera.out.parts[:-1])


def test_lost_audio_is_silence_once_it_is_a_second_late() -> None:
    """The camera stops sending audio for 3 s: parts wait for it at most HOLD_SECONDS, the audio they
    lack is given up as silence once it is more than HOLD_SECONDS behind, and the audio that comes
    back goes on from there."""
    gone = range(47, 47 + 141)  # AAC frames of about [1 s, 4 s)
    camera = play(Camera(), 6.0, per_packet=1, skip_audio=gone)
    parts = camera.out.parts
    waits = [left - cut for _, cut, left in parts]
    assert max(waits) <= AudioPath.HOLD_SECONDS + 1e-9 and max(waits) > 0.5
    audio = audio_of([p for p, _, _ in parts])
    assert [t for t, _ in audio] == [RATE + AAC_FRAME * i for i in range(len(audio))]  # no gap, no overlap
    silent = {t for t, d in audio if d == silent_unit(RATE, 1)}
    assert silent == {RATE + AAC_FRAME * i for i in gone}
    # a part ending at t s whose audio stopped more than a part before t waits for it; at t + 1 s
    # (before it comes back, at 4 s) it leaves with silence up to about t - 1 s; the later ones get
    # the audio that came back
    checked = 0
    for part, _, _ in parts:
        end = (part.start + part.duration - TIMELINE_ORIGIN) / 90_000
        if 2.1 < end < 2.95:
            last = (part.audio[-1].time + AAC_FRAME) / RATE - 1  # seconds since the first frame
            assert end - 1.0 - 2 * AAC_FRAME / RATE < last <= end - 1.0, (end, last)
            checked += 1
    assert checked == 4
    for segment, _ in camera.out.segments:
        assert [(a.time, a.data) for a in segment.audio] == audio_of(
            [p for p, _, _ in parts if p.seq == segment.seq]
        )


def test_segments_without_parts_still_wait_up_to_a_second() -> None:
    camera = Camera()
    camera.segmenter = Segmenter(target=1.0)
    camera.path = AudioPath(AudioConfig.aac_lc(RATE, 1), camera.segmenter, clock=lambda: camera.now)
    for frame in range(26):
        camera.advance(frame / FPS)
        camera.video(frame)
    assert camera.path.due() == pytest.approx(1.0 + 1.0)  # segment 0, cut at 1 s, held at most 1 s
    camera.advance(1.99)
    assert not camera.out.segments
    camera.advance(2.0)
    [(segment, at)] = camera.out.segments
    assert at == 2.0 and {a.data for a in segment.audio} == {silent_unit(RATE, 1)}
