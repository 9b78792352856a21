"""Pull-source configuration, backoff, and PyAV packets (AVCC from MP4, Annex B from raw H.264; hvcC
from MP4 and Annex B from the captured H.265 camera stream; AAC and A-law audio) to units."""

from __future__ import annotations

import io
import itertools
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import pytest

from camflow.errors import ConfigError
from ingest.codecs.aac import AudioConfig, AudioUnit
from ingest.codecs.h264 import NAL_IDR, NAL_PPS, NAL_SPS, join_annexb, split_annexb
from ingest.codecs.h265 import PARAMETER_SETS as H265_PARAMETER_SETS
from ingest.codecs.h265 import nal_type as h265_type
from ingest.errors import ParseError
from ingest.media.units import AccessUnit
from ingest.sources.pull.assembler import (
    HEVC_SYNTAX,
    AudioAssembler,
    PullCounters,
    UnitAssembler,
    parameter_sets,
)
from ingest.sources.pull.client import Backoff, PullSource, check_unique, load_sources, parse_pull
from tests.process import make_clip


def test_parse_pull() -> None:
    assert parse_pull("cam7=rtsp://10.0.0.7:554/s1?x=1") == PullSource("cam7", "rtsp://10.0.0.7:554/s1?x=1")
    for bad in ("cam7", "=rtsp://h/p", "cam7=http://h/p", "bad name=rtsp://h/p"):
        with pytest.raises(ConfigError):
            parse_pull(bad)


def test_rtsps_sources_are_pulled_over_tcp_only() -> None:
    assert PullSource("cam7", "rtsps://u:pw@10.0.0.7/s").secure
    assert not PullSource("cam7", "rtsp://10.0.0.7/s").secure
    with pytest.raises(ConfigError, match="rtsps:// is pulled over tcp only"):
        PullSource("cam7", "rtsps://10.0.0.7/s", "udp")


async def test_tls_relay_hands_pyav_a_loopback_url_and_relays_bytes(tmp_path: Path) -> None:
    """The relay keeps user, password, path and query, and carries bytes both ways through TLS;
    a certificate from another CA is refused before PyAV is involved."""
    import asyncio
    import ssl

    from camflow.tls import ServerTls, TlsFiles, client_context
    from ingest.sources.pull.tls import TlsRelay
    from tests.tls_certs import TestCa

    ca = TestCa(tmp_path / "pki")
    issued = ca.issue()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(100):
            writer.write(data.upper())
        writer.close()

    server = await asyncio.start_server(
        echo, "127.0.0.1", 0, ssl=ServerTls(TlsFiles(issued.cert, issued.key)).context
    )
    port = server.sockets[0].getsockname()[1]
    url = f"rtsps://cam:se%40cret@127.0.0.1:{port}/live/1?token=a/b"
    try:
        relay = await TlsRelay.open(url, client_context(ca.path, insecure=False), 5)
        assert relay.url == f"rtsp://cam:se%40cret@127.0.0.1:{relay.port}/live/1?token=a/b"
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"options")
        assert await asyncio.wait_for(reader.readexactly(7), 5) == b"OPTIONS"
        writer.close()
        await relay.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            await TlsRelay.open(url, client_context(None, insecure=False), 5)  # system CAs only
        insecure = await TlsRelay.open(url, client_context(None, insecure=True), 5)
        await insecure.close()
    finally:
        server.close()
        await server.wait_closed()


def test_a_sources_password_is_never_shown() -> None:
    source = PullSource("cam7", "rtsp://admin:Secr3t-pw@10.0.0.7:554/s1?x=1")
    assert source.shown == "rtsp://admin:***@10.0.0.7:554/s1?x=1"
    error = f"OSError: [Errno 111] Connection refused: '{source.url}' (user admin, Secr3t-pw)"
    assert source.scrub(error) == (
        "OSError: [Errno 111] Connection refused: 'rtsp://admin:***@10.0.0.7:554/s1?x=1' (user admin, ***)"
    )
    for plain in ("rtsp://10.0.0.7/s1", "rtsp://admin@10.0.0.7/s1", "rtsp://[::1]:554/a@b"):
        assert PullSource("cam7", plain).shown == plain
    short = PullSource("cam7", "rtsp://u:a@h/p")  # a one-letter password is not hunted in free text
    assert short.shown == "rtsp://u:***@h/p" and short.scrub("a refusal from rtsp://u:a@h/p") == (
        "a refusal from rtsp://u:***@h/p"
    )
    with pytest.raises(ConfigError) as refused:
        PullSource("cam7", "http://admin:Secr3t-pw@h/p")
    assert "Secr3t-pw" not in str(refused.value) and "admin:***@h" in str(refused.value)


def test_load_sources(tmp_path: Path) -> None:
    path = tmp_path / "sources.toml"
    path.write_text('cam1 = "rtsp://h/1"\n[cam2]\nurl = "rtsp://h/2"\ntransport = "UDP"\n')
    assert load_sources(path) == [PullSource("cam1", "rtsp://h/1"), PullSource("cam2", "rtsp://h/2", "udp")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cam1 = [", "expected TOML"),
        ("cam1 = 3", "expected a URL string"),
        ('[cam1]\nurl = "rtsp://h/1"\ntransport = "sctp"', "expected tcp or udp"),
        ('[cam1]\nurl = "rtsp://h/1"\nuser = "x"', "unknown keys"),
    ],
)
def test_bad_sources_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "sources.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_sources(path)


def test_missing_sources_file_and_duplicates(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sources file"):
        load_sources(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="pulled once"):
        check_unique([PullSource("a", "rtsp://h/1"), PullSource("a", "rtsp://h/2")])


def test_backoff_doubles_capped_and_jittered() -> None:
    backoff = Backoff(initial=0.5, cap=4.0)
    for failures, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (10, 4.0)):
        delays = [backoff.delay(failures) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered: many sources do not retry in lockstep


def units_of(path: Path, fmt: str | None = None) -> list[AccessUnit]:
    with av.open(str(path), format=fmt) as container:
        stream = container.streams.video[0]
        assembler = UnitAssembler(stream.codec_context.extradata, stream.time_base or Fraction(1, 90000))
        units = []
        for packet in container.demux(stream):
            if packet.size:
                unit = assembler.push(bytes(packet), packet.pts, packet.dts)
                if unit is not None:
                    units.append(unit)
        return units


def test_avcc_and_annexb_packets_give_the_same_units(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", 3, size="320x240", gop=30)
    raw = tmp_path / "clip.h264"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(clip),
            "-c",
            "copy",
            "-bsf:v",
            "h264_mp4toannexb",
            str(raw),
        ],
        check=True,
        timeout=60,
    )
    with av.open(str(clip)) as container:
        extradata = container.streams.video[0].codec_context.extradata
    assert extradata and extradata[0] == 1  # avcC: the MP4 demuxer gives length-prefixed NAL units
    params, length_size = parameter_sets(extradata)
    assert length_size == 4 and [p[0] & 0x1F for p in params] == [NAL_SPS, NAL_PPS]

    from_mp4 = units_of(clip)
    from_raw = units_of(raw, "h264")
    assert len(from_mp4) == len(from_raw) == 90
    assert sum(u.is_idr for u in from_mp4) == 3
    for a, b in zip(from_mp4, from_raw, strict=True):
        assert a.is_idr == b.is_idr
        vcl = [n for n in a.nalus if 1 <= n[0] & 0x1F <= 5]
        assert vcl == [n for n in b.nalus if 1 <= n[0] & 0x1F <= 5]
        if a.is_idr:  # the MP4 carries SPS/PPS only in avcC: they are re-inserted before the IDR
            types = [n[0] & 0x1F for n in a.nalus]
            assert types.index(NAL_SPS) < types.index(NAL_PPS) < types.index(NAL_IDR)
    # B-frames: presentation times are on the 90 kHz timeline, in decode order (not sorted).
    pts = [u.pts for u in from_mp4]
    assert sorted(pts) != pts and sorted(pts)[1] - sorted(pts)[0] == 3000


def test_missing_timestamps_are_counted_and_filled() -> None:
    assembler = UnitAssembler(None, Fraction(1, 90000))
    sps, pps, idr = b"\x67\x42\x00\x1e", b"\x68\xce", b"\x65\x88"
    first = assembler.push(b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps, None, None)
    assert first is None  # parameter sets alone are held for the next unit
    unit = assembler.push(b"\x00\x00\x00\x01" + idr, None, None)
    assert unit == AccessUnit(pts=0, nalus=(sps, pps, idr), is_idr=True)
    second = assembler.push(b"\x00\x00\x00\x01\x41\x9a", None, None)
    assert second is not None and second.pts == 3000 and assembler.counters.pts_missing == 2


def audio_units_of(path: Path) -> tuple[AudioAssembler, list[AudioUnit]]:
    with av.open(str(path)) as container:
        assembler = AudioAssembler(container.streams.audio[0])
        units = [u for p in container.demux(container.streams.audio[0]) if p.size for u in assembler.push(p)]
        return assembler, units + assembler.flush()


def tone(path: Path, codec: list[str], rate: int, channels: int) -> Path:
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={rate}"),
            *("-t", "2", "-ac", str(channels), *codec, str(path)),
        ],
        check=True,
        timeout=60,
    )
    return path


def test_pulled_aac_is_copied_with_its_config_and_sample_clock(tmp_path: Path) -> None:
    clip = tone(tmp_path / "aac.mp4", ["-c:a", "aac", "-ar", "44100"], 44100, 2)
    with av.open(str(clip)) as container:
        packets = [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]
    assembler, units = audio_units_of(clip)
    config = assembler.config  # FFmpeg's MP4 ASC adds an explicit "no SBR" extension after the 2 bytes
    assert (config.sample_rate, config.channels, config.asc[:2]) == (
        44100,
        2,
        AudioConfig.aac_lc(44100, 2).asc,
    )
    assert [u.data for u in units] == packets  # copied byte for byte
    steps = {b.pts - a.pts for a, b in itertools.pairwise(units)}
    assert steps == {1024} and all(u.duration == 1024 for u in units)


def test_pulled_alaw_is_encoded_to_aac_at_its_rate(tmp_path: Path) -> None:
    clip = tone(tmp_path / "alaw.wav", ["-c:a", "pcm_alaw", "-ar", "8000"], 8000, 1)
    assembler, units = audio_units_of(clip)
    assert assembler.codec == "pcm_alaw" and assembler.config == AudioConfig.aac_lc(8000, 1)
    seconds = sum(u.duration for u in units) / 8000
    assert 2.0 <= seconds <= 2.0 + 2 * 1024 / 8000  # the input, plus the encoder's priming and padding
    decoded = av.CodecContext.create("aac", "r")
    decoded.extradata = assembler.config.asc
    frames = [f for u in units[2:-2] for f in decoded.decode(av.Packet(u.data))]
    loudest = max(float(abs(f.to_ndarray()).max()) for f in frames)
    assert loudest > 0.05  # the tone (amplitude 1/8) came through


def test_pulled_audio_the_segments_cannot_carry_is_a_parse_error(tmp_path: Path) -> None:
    clip = tone(tmp_path / "raw.mp4", ["-c:a", "aac", "-ar", "44100"], 44100, 1)
    with av.open(str(clip)) as container:
        stream = container.streams.audio[0]
        stream.codec_context.extradata = None
        with pytest.raises(ParseError, match="AudioSpecificConfig"):
            AudioAssembler(stream)


# H.265: the captured camera stream (tests/vectors/h265_rtp_camera, MIT, see its LICENSE) and libx265.
CAMERA_H265 = Path(__file__).parent / "vectors" / "h265_rtp_camera" / "expected.h265"


def hevc_units(
    path: Path, fmt: str | None = None, *, extradata: bytes | None = None, drop: tuple[int, ...] = ()
) -> tuple[UnitAssembler, list[AccessUnit]]:
    """``path`` demuxed by PyAV into the HEVC assembler; ``drop``: NAL types cut out of the packets first
    (a camera that sends parameter sets only in the SDP), ``extradata``: instead of the demuxer's."""
    with av.open(str(path), format=fmt) as container:
        stream = container.streams.video[0]
        assembler = UnitAssembler(
            stream.codec_context.extradata if extradata is None else extradata,
            stream.time_base or Fraction(1, 90000),
            HEVC_SYNTAX,
        )
        units = []
        for packet in container.demux(stream):
            data = bytes(packet)
            if drop and data.startswith(b"\x00\x00"):
                data = join_annexb(n for n in split_annexb(data) if h265_type(n) not in drop)
            unit = assembler.push(data, packet.pts, packet.dts) if data else None
            if unit is not None:
                units.append(unit)
        return assembler, units


def test_captured_h265_camera_stream_gives_its_access_units_byte_for_byte() -> None:
    assembler, units = hevc_units(CAMERA_H265, "hevc")
    assert b"".join(join_annexb(u.nalus) for u in units) == CAMERA_H265.read_bytes()
    assert len(units) == 276 and [u.is_idr for u in units] == [True] + [False] * 275  # one IDR_N_LP
    # A raw elementary stream has no timestamps: each unit is placed one frame after the previous.
    assert assembler.counters == PullCounters(params_inserted=0, pts_missing=276)
    assert {b.pts - a.pts for a, b in itertools.pairwise(units)} == {3000}


def test_h265_parameter_sets_only_in_the_extradata_are_inserted_before_the_irap() -> None:
    # As FFmpeg's RTSP demuxer hands them out from sprop-vps/-sps/-pps: Annex B extradata.
    params = split_annexb(CAMERA_H265.read_bytes())[:3]
    assert [h265_type(n) for n in params] == list(H265_PARAMETER_SETS)
    assembler, units = hevc_units(
        CAMERA_H265, "hevc", extradata=join_annexb(params), drop=H265_PARAMETER_SETS
    )
    assert b"".join(join_annexb(u.nalus) for u in units) == CAMERA_H265.read_bytes()
    assert assembler.counters.params_inserted == 1


def test_hvcc_extradata_and_length_prefixed_h265_packets(tmp_path: Path) -> None:
    clip = tmp_path / "clip265.mp4"
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "2"),
            *("-c:v", "libx265", "-preset", "ultrafast", "-x265-params"),
            *("keyint=25:min-keyint=25:scenecut=0:bframes=2:log-level=error", "-tag:v", "hvc1", str(clip)),
        ],
        check=True,
        timeout=120,
    )
    with av.open(str(clip)) as container:
        extradata = container.streams.video[0].codec_context.extradata
    assert extradata and extradata[0] == 1  # hvcC: the MP4 demuxer gives length-prefixed NAL units
    params, length_size = parameter_sets(extradata, HEVC_SYNTAX)
    assert length_size == 4 and [h265_type(p) for p in params] == list(H265_PARAMETER_SETS)

    with av.open(str(clip)) as container:  # length-prefixed packets of 256..511 bytes start 00 00 01 too
        assert any(bytes(p).startswith(b"\x00\x00\x01") for p in container.demux(video=0))
    assembler, units = hevc_units(clip)
    assert len(units) == 50 and sum(u.is_idr for u in units) == 2
    # The MP4 carries VPS/SPS/PPS only in hvcC: they are put before each IRAP picture, in order.
    assert assembler.counters.params_inserted == 2
    for unit in (u for u in units if u.is_idr):
        kinds = [h265_type(n) for n in unit.nalus]
        first_vcl = next(i for i, k in enumerate(kinds) if k < 32)
        assert kinds.index(32) < kinds.index(33) < kinds.index(34) < first_vcl, kinds
    pts = [u.pts for u in units]  # B-frames: decode order, presentation times on the 90 kHz timeline
    assert sorted(pts) != pts and sorted(pts)[1] - sorted(pts)[0] == 3600
    with av.open(io.BytesIO(b"".join(join_annexb(u.nalus) for u in units)), "r", format="hevc") as out:
        assert len(list(out.decode(video=0))) == 50


def test_truncated_config_records_give_what_they_hold() -> None:
    params = split_annexb(CAMERA_H265.read_bytes())[:3]
    arrays = b"".join(
        bytes([0x80 | h265_type(n)]) + (1).to_bytes(2, "big") + len(n).to_bytes(2, "big") + n for n in params
    )
    hvcc = b"\x01" + bytes(20) + b"\x03" + b"\x03" + arrays  # lengthSizeMinusOne 3, three arrays
    assert parameter_sets(hvcc, HEVC_SYNTAX) == (params, 4)
    for end in range(1, len(hvcc)):
        found, _ = parameter_sets(hvcc[:end], HEVC_SYNTAX)
        assert all(h265_type(n) in H265_PARAMETER_SETS for n in found)


def test_pull_sources_from_the_environment_and_a_warning_for_a_password_in_argv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import structlog

    from camflow.cli.serve import _pull_sources
    from tests.defaults import parsed

    monkeypatch.setenv("CAMFLOW_PULL", "cam8=rtsp://u:env-pass-1@10.0.0.8/a  cam9=rtsp://10.0.0.9/b")
    args = parsed("ingest", "--kafka", "127.0.0.1:9", "--pull", "cam7=rtsp://u:argv-pass-1@10.0.0.7/s")
    with structlog.testing.capture_logs() as logs:
        sources = _pull_sources(args)
    assert [s.name for s in sources] == ["cam7", "cam8", "cam9"]
    assert sources[1].url == "rtsp://u:env-pass-1@10.0.0.8/a"
    (warning,) = [e for e in logs if e["event"] == "pull_password_on_command_line"]
    assert warning["stream_id"] == "cam7" and "CAMFLOW_PULL" in warning["hint"]
    assert "argv-pass-1" not in str(logs) and "env-pass-1" not in str(logs)
