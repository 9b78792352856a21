"""A stream's AAC as Opus for WebRTC viewers (ingest.media.live_audio): a tone encoded to AAC by the
audio path's encoder comes out as 20 ms Opus packets on 48 kHz that decode to the same tone."""

from __future__ import annotations

import itertools
from fractions import Fraction

import av
import numpy as np

from ingest.codecs.aac import AacEncoder, AudioUnit
from ingest.media.live_audio import OPUS_FRAME, OPUS_RATE, AacToOpus

RATE, TONE, SECONDS = 44_100, 1000.0, 2


def aac_tone(rate: int = RATE, channels: int = 2) -> tuple[AacEncoder, list[AudioUnit]]:
    t = np.arange(rate * SECONDS) / rate
    wave = (0.5 * np.sin(2 * np.pi * TONE * t) * 32767).astype("<i2")
    pcm = np.repeat(wave, channels).tobytes()
    encoder = AacEncoder(rate, channels)
    units = encoder.encode_pcm(pcm, 0, sample_rate=rate, channels=channels) + encoder.flush()
    return encoder, units


def decode_opus(packets: list[tuple[bytes, int]], channels: int) -> np.ndarray:
    decoder = av.CodecContext.create("opus", "r")
    assert isinstance(decoder, av.audio.codeccontext.AudioCodecContext)
    decoder.sample_rate, decoder.layout = OPUS_RATE, "stereo" if channels == 2 else "mono"
    chunks = []
    for data, pts in packets:
        packet = av.Packet(data)
        packet.pts, packet.time_base = pts, Fraction(1, OPUS_RATE)
        for frame in decoder.decode(packet):
            chunks.append(frame.to_ndarray().reshape(-1, frame.samples)[0].astype(np.float32))
    return np.concatenate(chunks)


def test_aac_becomes_20ms_opus_packets_of_the_same_tone() -> None:
    encoder, units = aac_tone()
    opus = AacToOpus(encoder.config)
    packets = [p for unit in units for p in opus.push(unit)]
    stamps = [pts for _, pts in packets]
    assert all(b - a == OPUS_FRAME for a, b in itertools.pairwise(stamps)), stamps[:10]
    assert abs(len(packets) * OPUS_FRAME - SECONDS * OPUS_RATE) <= 4 * OPUS_FRAME, len(packets)
    assert opus.counters.aac_units == len(units) and opus.counters.aac_undecodable == 0
    samples = decode_opus(packets, 2)[OPUS_RATE // 2 :]  # past the codecs' start-up
    spectrum = np.abs(np.fft.rfft(samples))
    peak = np.argmax(spectrum) * OPUS_RATE / len(samples)
    assert abs(peak - TONE) < 5, peak


def test_mono_g711_rate_aac_is_resampled_to_48khz() -> None:
    encoder, units = aac_tone(rate=8000, channels=1)
    opus = AacToOpus(encoder.config)
    packets = [p for unit in units for p in opus.push(unit)]
    priming = 2 * 1024 * OPUS_RATE // 8000  # the AAC encoder's priming and last frame, at 8 kHz
    assert abs(len(packets) * OPUS_FRAME - SECONDS * OPUS_RATE) <= priming + 2 * OPUS_FRAME, len(packets)
    samples = decode_opus(packets, 1)[OPUS_RATE // 2 :]
    peak = np.argmax(np.abs(np.fft.rfft(samples))) * OPUS_RATE / len(samples)
    assert abs(peak - TONE) < 5, peak


def test_an_undecodable_unit_is_counted_not_raised() -> None:
    encoder, units = aac_tone()
    opus = AacToOpus(encoder.config)
    opus.push(units[0])
    assert opus.push(AudioUnit(units[1].pts, b"\xff" * 3)) == []
    assert opus.counters.aac_undecodable + opus.counters.aac_units >= 2
