"""FFmpeg's own WHIP muxer (PyAV) publishing a generated H.264 + Opus clip: run as a subprocess.

    python -m tests.whip_publish URL TOKEN SECONDS [--cert CERT --key KEY]

Real time (frames paced at 30 fps); exits 0 after closing the muxer (which DELETEs the session).
Run it in its own process: in a thread of the answerer's process the HTTP exchange deadlocks.
"""

from __future__ import annotations

import argparse
import time
from fractions import Fraction

import av
import numpy as np

FPS = 30
RATE = 48_000


def publish(url: str, token: str, seconds: float, cert: str | None, key: str | None) -> None:
    options = {"authorization": token}
    if cert and key:
        options |= {"cert_file": cert, "key_file": key}
    out = av.open(url, "w", format="whip", options=options)
    video = out.add_stream("libx264", rate=FPS)
    video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
    video.codec_context.options = {
        "profile": "baseline",
        "tune": "zerolatency",
        "g": str(FPS),
        "bf": "0",
        "sc_threshold": "0",
    }
    audio = out.add_stream("libopus", rate=RATE)
    audio.layout = "stereo"
    frames = round(seconds * FPS)
    t0 = time.monotonic()
    samples = 0
    y = np.zeros((240, 320, 3), np.uint8)
    for i in range(frames):
        y[:, :, 0] = (i * 4) % 256
        y[:, (i * 3) % 320, :] = 255
        frame = av.VideoFrame.from_ndarray(y, format="rgb24")
        frame.pts = i
        frame.time_base = Fraction(1, FPS)
        for packet in video.encode(frame):
            out.mux(packet)
        while samples < (i + 1) * RATE // FPS:
            tone = np.sin(2 * np.pi * 440 * (samples + np.arange(960)) / RATE).astype(np.float32) * 0.3
            aframe = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            aframe.sample_rate, aframe.pts, aframe.time_base = RATE, samples, Fraction(1, RATE)
            for packet in audio.encode(aframe):
                out.mux(packet)
            samples += 960
        delay = t0 + (i + 1) / FPS - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    for stream in (video, audio):
        for packet in stream.encode(None):
            out.mux(packet)
    out.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("seconds", type=float)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    av.logging.set_level(av.logging.WARNING)
    publish(args.url, args.token, args.seconds, args.cert, args.key)


if __name__ == "__main__":
    main()
