"""A publish session's audio path: AAC units placed on the video's epoch timeline (by RTCP sender
reports, or by arrival), held until each video segment's audio is in, and handed to the segments."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from ingest.codecs.aac import AudioConfig, AudioCounters, AudioUnit, silent_unit
from ingest.media.cuts import AudioSample, CutPart, CutSegment
from ingest.media.segmenter import TIMESCALE, AudioTrack, Segmenter, audio_ticks

Cut = CutSegment | CutPart


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


class AudioPath:
    """A publish session's audio: units in, placed on the video's epoch timeline, handed to segments.

    Placement: when the camera sent RTCP sender reports for both tracks, an audio unit goes where its
    wall-clock time puts it on the video's RTP clock; otherwise the first unit is placed by arrival
    (the latest IDR's pts plus the time since it arrived). Later units follow their own clock exactly;
    an audio timestamp jump of more than 1 s, or a video timeline rebase, places the next unit afresh.

    Segments wait here until the audio reaches their end, or for ``HOLD_SECONDS``; parts (``parts``)
    for at most ``part_hold`` seconds (``PART_HOLD_SECONDS``, at most a quarter of the part target;
    ``HOLD_SECONDS`` until the stream's first audio has gone out): then a part leaves with the audio
    that has arrived, if it reaches within a part target of the part's end (else the part waits for
    it, at most ``HOLD_SECONDS``), and what comes later goes into the next part (audio that should
    have come more than ``HOLD_SECONDS`` before a part's end is given up: silence).
    Everything leaves in the order it came; ``due`` says when the first held cut leaves whatever the
    audio does, so that the publisher's timer can ``release`` it. A part takes the audio of its span
    (or what arrived of it, and what the part before it left); a segment cut into parts gets its
    parts' audio and leaves with its last part, so its parts in order hold exactly its audio samples.
    """

    HOLD_SECONDS = 1.0
    PART_HOLD_SECONDS = 0.05
    JUMP_SECONDS = 1.0

    def __init__(
        self,
        config: AudioConfig,
        segmenter: Segmenter,
        *,
        clock_rate: int | None = None,
        counters: AudioCounters | None = None,
        video_clock_rate: int = TIMESCALE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock_rate``: the clock the audio sender reports count in (an RTP track's clock, default
        the sample rate); ``counters``: the source's audio corrections, for the publisher's report."""
        self.config = config
        self.counters = counters if counters is not None else AudioCounters()
        self.track = AudioTrack(config.sample_rate, silent_unit(config.sample_rate, config.channels))
        self._segmenter = segmenter
        self._video_rate = video_clock_rate
        self._clock = clock
        self._rtp_rate = clock_rate if clock_rate is not None else config.sample_rate
        self._anchor: tuple[int, int] | None = None  # (unit pts, audio ticks on the timeline)
        self._next_pts: int | None = None
        self._idr: tuple[int, float] | None = None  # (pts, arrival) of the latest video IDR
        self._video_sr: tuple[float, int] | None = None
        self._audio_sr: tuple[float, int] | None = None
        self._held: list[tuple[Cut, float]] = []  # (cut, when it came)
        part_ticks = segmenter.part_ticks
        self.part_hold = (
            self.PART_HOLD_SECONDS
            if part_ticks is None
            else min(self.PART_HOLD_SECONDS, part_ticks / TIMESCALE / 4)
        )
        self._lost = round(self.HOLD_SECONDS * config.sample_rate)
        part_seconds = self.PART_HOLD_SECONDS * 4 if part_ticks is None else part_ticks / TIMESCALE
        self._behind = round(part_seconds * config.sample_rate)  # audio ticks a part may leave without
        self._parts_audio: tuple[int, list[AudioSample]] | None = None  # (seq, audio its parts took)

    # --- in ----------------------------------------------------------------------------------------

    def on_unit(self, unit: AudioUnit) -> list[Cut]:
        if self._segmenter.base is None:
            return []  # no video timeline yet
        if (
            self._anchor is None
            or self._next_pts is None
            or abs(unit.pts - self._next_pts) > (self.JUMP_SECONDS * self.config.sample_rate)
        ):
            self._anchor = (unit.pts, self._place(unit.pts))
        self._next_pts = unit.pts + unit.duration
        time_ = self._anchor[1] + unit.pts - self._anchor[0]
        self.track.push(AudioSample(time_, unit.data, unit.duration))
        # only what the audio completes: a part that may leave without the rest of its audio goes at
        # ``due`` (the publisher's timer), after the other units of the same packet are in
        return self._release(settle=False)

    def on_video_idr(self, pts: int) -> None:
        self._idr = (pts, self._clock())

    def on_video_rebase(self) -> None:
        self._anchor = None

    def on_sender_report(self, ntp_unix: float, rtp_timestamp: int) -> None:
        self._audio_sr = (ntp_unix, rtp_timestamp & 0xFFFFFFFF)

    def on_video_sender_report(self, ntp_unix: float, rtp_timestamp: int) -> None:
        self._video_sr = (ntp_unix, rtp_timestamp & 0xFFFFFFFF)

    def _place(self, pts: int) -> int:
        """Audio ticks on the epoch timeline of the unit with this pts."""
        if self._idr is None:
            return 0
        idr_pts, arrival = self._idr
        if self._audio_sr is not None and self._video_sr is not None:
            a_ntp, a_rtp = self._audio_sr
            v_ntp, v_rtp = self._video_sr
            rtp = pts * self._rtp_rate // self.config.sample_rate
            wall = a_ntp + _signed32(rtp - a_rtp) / self._rtp_rate
            video32 = v_rtp + round((wall - v_ntp) * self._video_rate)
            video = idr_pts + _signed32(video32 - idr_pts)
        else:
            video = idr_pts + round((self._clock() - arrival) * self._video_rate)
        timeline = self._segmenter.to_timeline(video) * TIMESCALE // self._video_rate
        return audio_ticks(timeline, self.config.sample_rate)

    # --- segments out ------------------------------------------------------------------------------

    def segments(self, segment: CutSegment) -> list[Cut]:
        """Hold a cut segment until its audio is in; returns the segments and parts (with audio) now
        complete, in order."""
        if segment.discontinuity and not self._parts_of(segment.seq):
            self.on_video_rebase()
        self._held.append((segment, self._clock()))
        return self._release()

    def parts(self, part: CutPart) -> list[Cut]:
        """Hold a part until its audio is in, at most ``part_hold`` seconds; part 0 comes before its
        segment."""
        if part.discontinuity:
            self.on_video_rebase()
        self._held.append((part, self._clock()))
        return self._release()

    def due(self) -> float | None:
        """When (by the path's clock) the first held segment or part leaves without more audio; None
        when nothing is held."""
        if not self._held:
            return None
        cut, since = self._held[0]
        if isinstance(cut, CutPart):
            now, hold = self._clock(), since + self._part_hold()
            if now < hold:
                return hold
            return now if self._part_goes(cut, since, now) else since + self.HOLD_SECONDS
        return self._clock() if self._parts_of(cut.seq) else since + self.HOLD_SECONDS

    def _part_goes(self, part: CutPart, since: float, now: float) -> bool:
        """Whether a part whose audio is not all in leaves now: held for ``part_hold`` (as ``due``
        reckons it), and then only if the audio that arrived reaches within a part target of its end;
        audio later than that (a slow audio path: G.711 re-encoded to AAC, say) is waited for, at most
        ``HOLD_SECONDS``, so a part's audio never lags its video by more than a part."""
        if now >= since + self.HOLD_SECONDS:
            return True
        if now < since + self._part_hold():
            return False
        reach = self.track.reach
        need = audio_ticks(part.start + part.duration, self.config.sample_rate) - self.track.frame + 1
        return reach is not None and reach >= need - self._behind

    def _part_hold(self) -> float:
        """``part_hold``; until the stream's first audio has gone out, ``HOLD_SECONDS``: a stream starts
        with its audio (a player joining at its start finds no hole in the audio to stall on)."""
        return self.part_hold if self.track.started else self.HOLD_SECONDS

    def release(self) -> list[Cut]:
        """What leaves now (at ``due``): the segments and parts complete, or held long enough."""
        return self._release()

    def flush(self) -> list[Cut]:
        """End of the session: every held segment and part, with whatever audio arrived."""
        return self._release(force=True)

    def _parts_of(self, seq: int) -> bool:
        return any(isinstance(cut, CutPart) and cut.seq == seq for cut, _ in self._held) or (
            self._parts_audio is not None and self._parts_audio[0] == seq
        )

    def _release(self, force: bool = False, settle: bool = True) -> list[Cut]:
        """What leaves now, in order; ``settle`` False: only the cuts whose audio is all in (or whose
        time is up), not the parts that could leave with part of it (``_part_goes``)."""
        out: list[Cut] = []
        now = self._clock()
        while self._held:
            cut, since = self._held[0]
            end = cut.start + cut.duration
            complete = force or self.track.covers(end)
            if isinstance(cut, CutPart):
                expired = now >= since + self.HOLD_SECONDS
                if not (complete or expired or (settle and self._part_goes(cut, since, now))):
                    break
                lost = None if complete else self._lost
                audio = self.track.take(cut.start, end, continuous=True, lost=lost)
                if self._parts_audio is None or self._parts_audio[0] != cut.seq:
                    self._parts_audio = (cut.seq, [])
                self._parts_audio[1].extend(audio)
            elif self._parts_audio is not None and self._parts_audio[0] == cut.seq:
                audio, self._parts_audio = tuple(self._parts_audio[1]), None  # leaves with its last part
            elif complete or now >= since + self.HOLD_SECONDS:
                audio = self.track.take(cut.start, end)
            else:
                break
            self._held.pop(0)
            out.append(dataclasses.replace(cut, audio=audio))
        return out
