"""Camera quirks through the whole media path: RTP packets → depacketizer → segmenter → fMP4.

Each vector is a real clip (libx264 / libx265, B-frames, an IDR every 2 s) packetized the way a
camera with that behaviour sends it; every segment that comes out must still demux and decode in
PyAV, and every correction must show in a counter.
"""

from __future__ import annotations

import base64
import io
import itertools
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import av
import av.bitstream
import pytest
from structlog.testing import capture_logs

from camflow.bus import LocalBus
from camflow.events import TOPIC_RAW, RawSegment, decode
from ingest.codecs import h264, h265
from ingest.media.mux import H264, HEVC, SegmentMuxer
from ingest.media.publisher import Publisher
from ingest.media.segmenter import MAX_FORWARD_JUMP, TIMELINE_ORIGIN, TIMESCALE, CutSegment, Segmenter
from ingest.media.units import AccessUnit
from ingest.sources.rtp.base import NalDepacketizer
from ingest.sources.rtp.h264 import H264Depacketizer, H264Packetizer
from ingest.sources.rtp.h265 import H265Depacketizer, H265Packetizer
from ingest.sources.rtp.jitter import JitterBuffer
from ingest.sources.rtp.packet import RtpPacket
from ingest.sources.rtp.track import RtpVideoTrack
from tests import defaults

FPS = 25
FRAME = TIMESCALE // FPS
SECONDS = 6


def encode_clip(path: Path, codec: str) -> None:
    params = ["-x265-params", "keyint=50:min-keyint=50:scenecut=0:bframes=3:no-open-gop=1:log-level=error"]
    if codec == "libx264":
        params = ["-g", "50", "-keyint_min", "50", "-sc_threshold", "0", "-bf", "2"]
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate={FPS}"),
            *("-t", str(SECONDS), "-c:v", codec, "-preset", "ultrafast", "-pix_fmt", "yuv420p", *params),
            str(path),
        ],
        check=True,
        timeout=120,
    )


def access_units(path: Path, bsf: str, is_key: Callable[[bytes], bool]) -> list[AccessUnit]:
    """The clip's frames in decode order, Annex B NAL units with 90 kHz pts starting at 0."""
    units = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        annexb = av.bitstream.BitStreamFilterContext(bsf, stream)
        for packet in [*container.demux(stream), None]:
            for out in annexb.filter(packet):
                assert out.pts is not None and out.time_base is not None
                nalus = tuple(h264.split_annexb(bytes(out)))
                units.append(
                    AccessUnit(round(out.pts * out.time_base * TIMESCALE), nalus, any(map(is_key, nalus)))
                )
    return units


@pytest.fixture(scope="module")
def avc(tmp_path_factory: pytest.TempPathFactory) -> list[AccessUnit]:
    path = tmp_path_factory.mktemp("avc") / "clip.mp4"
    encode_clip(path, "libx264")
    return access_units(path, "h264_mp4toannexb", lambda n: h264.nal_type(n) == h264.NAL_IDR)


@pytest.fixture(scope="module")
def hevc(tmp_path_factory: pytest.TempPathFactory) -> list[AccessUnit]:
    path = tmp_path_factory.mktemp("hevc") / "clip.mp4"
    encode_clip(path, "libx265")
    return access_units(path, "hevc_mp4toannexb", lambda n: h265.is_irap(h265.nal_type(n)))


def packetize(units: Iterable[AccessUnit], codec: str = "h264", first_seq: int = 0) -> list[RtpPacket]:
    packetizer = (H265Packetizer if codec == HEVC else H264Packetizer)(
        max_payload_size=600, initial_sequence=first_seq
    )
    return [RtpPacket.parse(bytes(p)) for u in units for p in packetizer.packetize(u)]


def shifted(units: Iterable[AccessUnit], ticks: int) -> list[AccessUnit]:
    return [replace(u, pts=(u.pts + ticks) & 0xFFFFFFFF) for u in units]


def media_path(
    packets: Iterable[RtpPacket], depacketizer: NalDepacketizer, codec: str = "h264"
) -> tuple[Segmenter, list[CutSegment], list[bytes]]:
    """What a Publisher does with each packet, without the bus: segments and their fMP4 bytes."""
    segmenter = Segmenter(target=2.0)
    units = [u for p in packets for u in depacketizer.push(p)] + depacketizer.flush()
    cuts = [s for u in units for s in segmenter.push(u)] + segmenter.flush()
    muxer = SegmentMuxer(codec)
    try:
        return segmenter, cuts, [muxer.mux(c) for c in cuts]
    finally:
        muxer.close()


def decoded_frames(data: bytes) -> tuple[int, str, str]:
    """Frames decoded from one fMP4 segment, its codec name and its sample entry tag."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        tag = stream.codec_context.codec_tag
        return sum(1 for _ in container.decode(stream)), stream.codec_context.name, tag


def assert_continuous(cuts: list[CutSegment]) -> None:
    for a, b in itertools.pairwise(cuts):
        assert a.start + a.duration == b.start
        assert a.samples[-1].dts + a.samples[-1].duration == b.samples[0].dts
    samples = [x for c in cuts for x in c.samples]
    assert all(a.dts < b.dts for a, b in itertools.pairwise(samples))
    assert all(x.dts <= x.pts for x in samples)


# --- RTP timestamp wrap-around --------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["h264", HEVC])
def test_rtp_timestamp_wraps_mid_stream(codec: str, avc: list[AccessUnit], hevc: list[AccessUnit]) -> None:
    clip = hevc if codec == HEVC else avc
    near_wrap = 2**32 - 3 * TIMESCALE  # the 32-bit RTP clock wraps 3 s into the stream
    packets = packetize(shifted(clip, near_wrap), codec, first_seq=65_000)  # sequence numbers wrap too
    assert packets[0].timestamp > packets[-1].timestamp
    depacketizer = H265Depacketizer() if codec == HEVC else H264Depacketizer()
    segmenter, cuts, data = media_path(packets, depacketizer, codec)
    assert [c.duration for c in cuts] == [2 * TIMESCALE] * 3
    assert cuts[0].start == TIMELINE_ORIGIN
    assert_continuous(cuts)
    assert not any(c.discontinuity or c.damaged for c in cuts)
    assert segmenter.counters.timestamp_jumps_forward == segmenter.counters.timestamp_jumps_backward == 0
    assert [decoded_frames(d)[0] for d in data] == [2 * FPS] * 3


# --- the camera's clock jumps ---------------------------------------------------------------------


def test_timestamp_jump_after_ntp_resync(avc: list[AccessUnit]) -> None:
    # A camera that steps its RTP clock to NTP one hour ahead, 3.2 s into the stream (mid-GOP).
    jump_at = next(i for i, u in enumerate(avc) if u.pts >= 80 * FRAME)
    units = avc[:jump_at] + shifted(avc[jump_at:], 3600 * TIMESCALE)
    segmenter, cuts, data = media_path(packetize(units), H264Depacketizer())
    assert segmenter.counters.timestamp_jumps_forward == 1
    assert segmenter.counters.dropped_after_jump == 100 - jump_at  # up to the IDR at 4 s
    assert [(c.discontinuity, len(c.samples)) for c in cuts] == [
        (False, 50),
        (False, jump_at - 50),
        (True, 50),
    ]
    assert_continuous(cuts)  # a new continuous timeline: the next IDR starts where the last segment ended
    assert [decoded_frames(d)[0] for d in data] == [50, jump_at - 50, 50]


def test_small_pause_is_not_a_jump(avc: list[AccessUnit]) -> None:
    # A camera that stalls for a few seconds (under MAX_FORWARD_JUMP) keeps one timeline.
    pause = round((MAX_FORWARD_JUMP - 2) * TIMESCALE)
    units = avc[:100] + shifted(avc[100:], pause)
    segmenter, cuts, _ = media_path(packetize(units), H264Depacketizer())
    assert segmenter.counters.timestamp_jumps_forward == 0 and not any(c.discontinuity for c in cuts)


def test_camera_encoder_restart_goes_back_in_time(avc: list[AccessUnit]) -> None:
    # A camera whose encoder restarts at the IDR at 4 s with its RTP clock back at the stream's start.
    units = avc[:100] + shifted(avc[100:], -100 * FRAME)
    segmenter, cuts, data = media_path(packetize(units), H264Depacketizer())
    assert segmenter.counters.timestamp_jumps_backward == 1 and segmenter.counters.dropped_after_jump == 0
    assert [(c.discontinuity, c.duration) for c in cuts] == [(False, 2 * TIMESCALE)] * 2 + [
        (True, 2 * TIMESCALE)
    ]
    assert_continuous(cuts)
    assert [decoded_frames(d)[0] for d in data] == [50, 50, 50]


def test_b_frames_are_not_taken_for_backward_jumps(hevc: list[AccessUnit]) -> None:
    assert any(b.pts < a.pts for a, b in itertools.pairwise(hevc))  # decode order != presentation order
    segmenter, cuts, _ = media_path(packetize(hevc, HEVC), H265Depacketizer(), HEVC)
    assert segmenter.counters.timestamp_jumps_backward == 0 and len(cuts) == 3


# --- loss ----------------------------------------------------------------------------------------


def test_lost_packet_of_a_reference_frame_marks_the_segment_damaged(avc: list[AccessUnit]) -> None:
    packets = packetize(avc)
    # Lose one packet of a P frame in the second GOP.
    victim = next(i for i, p in enumerate(packets) if p.timestamp == avc[60].pts and i > 0)
    assert h264.nal_type(avc[60].nalus[-1]) == h264.NAL_SLICE and avc[60].nalus[-1][0] & 0x60
    depacketizer = H264Depacketizer()
    segmenter, cuts, data = media_path(packets[:victim] + packets[victim + 1 :], depacketizer)
    assert [c.damaged for c in cuts] == [False, True, False]
    assert depacketizer.counters.packets_lost == 1 and segmenter.counters.segments_damaged == 1
    assert all(decoded_frames(d)[0] > 0 for d in data)  # still muxed and playable, just marked


# --- parameter sets only in the SDP ---------------------------------------------------------------


def strip(
    units: list[AccessUnit], kinds: tuple[int, ...], kind_of: Callable[[bytes], int]
) -> list[AccessUnit]:
    return [replace(u, nalus=tuple(n for n in u.nalus if kind_of(n) not in kinds)) for u in units]


def test_hikvision_style_sps_pps_only_in_sdp(avc: list[AccessUnit]) -> None:
    sps = next(n for n in avc[0].nalus if h264.nal_type(n) == h264.NAL_SPS)
    pps = next(n for n in avc[0].nalus if h264.nal_type(n) == h264.NAL_PPS)
    stripped = strip(avc, (h264.NAL_SPS, h264.NAL_PPS), h264.nal_type)
    assert not any(h264.nal_type(n) == h264.NAL_SPS for u in stripped for n in u.nalus)
    depacketizer = H264Depacketizer(f"{base64.b64encode(sps).decode()},{base64.b64encode(pps).decode()}")
    _, _, data = media_path(packetize(stripped), depacketizer)
    assert depacketizer.counters.params_inserted == 3
    assert [decoded_frames(d)[:2] for d in data] == [(50, "h264")] * 3


def test_hikvision_style_vps_sps_pps_only_in_sdp_h265(hevc: list[AccessUnit]) -> None:
    params = {h265.nal_type(n): n for n in hevc[0].nalus if h265.nal_type(n) in h265.PARAMETER_SETS}
    fmtp = {
        f"sprop-{name}": base64.b64encode(params[k]).decode()
        for name, k in zip(("vps", "sps", "pps"), h265.PARAMETER_SETS, strict=True)
    }
    stripped = strip(hevc, h265.PARAMETER_SETS, h265.nal_type)
    depacketizer = H265Depacketizer(fmtp)
    _, _, data = media_path(packetize(stripped, HEVC), depacketizer, HEVC)
    assert depacketizer.counters.params_inserted == 3
    assert [decoded_frames(d) for d in data] == [(50, "hevc", "hvc1")] * 3


def test_h265_segments_carry_hvc1_codecs_and_no_in_band_parameter_sets(hevc: list[AccessUnit]) -> None:
    cuts = media_path(packetize(hevc, HEVC), H265Depacketizer(), HEVC)[1]
    muxer = SegmentMuxer(HEVC)
    try:
        data = muxer.mux(cuts[0])
        assert muxer.params is not None and muxer.params.codecs.startswith("hvc1.1.6.L")
        assert (muxer.params.width, muxer.params.height) == (320, 240)
    finally:
        muxer.close()
    with av.open(io.BytesIO(data)) as container:
        first = next(container.demux(video=0))
        kinds = []
        raw = bytes(first)
        pos = 0
        while pos + 4 <= len(raw):  # length-prefixed NAL units
            size = int.from_bytes(raw[pos : pos + 4], "big")
            kinds.append(h265.nal_type(raw[pos + 4 : pos + 4 + size]))
            pos += 4 + size
    assert kinds and not set(kinds) & set(h265.PARAMETER_SETS) and h265.is_irap(kinds[-1])


def test_muxer_refuses_h265_segment_without_parameter_sets(hevc: list[AccessUnit]) -> None:
    cuts = media_path(packetize(hevc[:10], HEVC), H265Depacketizer(), HEVC)[1]
    bare = replace(cuts[0], samples=cuts[0].samples[1:])
    muxer = SegmentMuxer(HEVC)
    with pytest.raises(ValueError, match="without VPS/SPS/PPS"):
        muxer.mux(bare)
    muxer.close()
    with pytest.raises(ValueError, match="video codec 'vp8'"):
        SegmentMuxer("vp8")


# --- the publisher: UDP jitter buffer, flags on the bus, counters in the logs ---------------------


async def test_publisher_over_udp_corrects_reorders_jumps_and_counts(avc: list[AccessUnit]) -> None:
    jump_at = 100  # the IDR at 4 s: a camera that stepped its clock at a keyframe
    units = avc[:jump_at] + shifted(avc[jump_at:], 20 * TIMESCALE)
    packets = packetize(units, first_seq=65_400)
    for i in range(5, len(packets) - 1, 40):  # Wi-Fi: neighbouring packets swapped
        packets[i], packets[i + 1] = packets[i + 1], packets[i]
    lost = next(i for i, p in enumerate(packets) if p.timestamp == avc[20].pts)
    del packets[lost]  # one packet of a P frame of the first GOP
    bus = LocalBus(queue_size=64)
    consumer = await bus.subscribe([TOPIC_RAW], "test")
    depacketizer, jitter = H264Depacketizer(), JitterBuffer()
    counters = (depacketizer.counters, jitter.counters)
    publisher = Publisher(bus, "cam9", codec=H264, segment_target=defaults.SEGMENT_TARGET, counters=counters)
    track = RtpVideoTrack(depacketizer, publisher.push_video, publisher.stats, jitter=jitter)
    with capture_logs() as logs:
        await publisher.start()
        for packet in packets:
            track.on_rtp(bytes(packet))
        track.flush()
        await publisher.close("teardown")
    events = []
    while (msg := await consumer.get(timeout=0.1)) is not None:
        event = decode(msg.value)
        assert isinstance(event, RawSegment)
        events.append(event)
    assert [(e.seq, e.damaged, e.discontinuity) for e in events] == [
        (0, True, False),
        (1, False, False),
        (2, False, True),
    ]
    assert all(e.codecs.startswith("avc1.") for e in events)
    corrections = publisher.corrections()
    assert corrections["reordered"] > 0 and corrections["packets_late"] == 0
    assert corrections["packets_lost"] == 1 and corrections["timestamp_jumps_forward"] == 1
    corrected = [entry for entry in logs if entry["event"] == "media_corrected"]
    assert 1 <= len(corrected) <= len(events)  # at most once per segment
    assert sum(entry.get("packets_lost", 0) for entry in corrected) == 1
    (ended,) = [entry for entry in logs if entry["event"] == "publish_ended"]
    assert ended["segments_published"] == 3 and ended["segments_damaged"] == 1
    assert ended["timestamp_jumps_forward"] == 1 and ended["reordered"] == corrections["reordered"]
