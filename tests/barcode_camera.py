"""A camera whose every picture shows the moment it was made: ffmpeg pushes RTSP (libx264, no
B-frames) of raw frames that this module paints, each with its wall-clock time in milliseconds as a
row of black and white blocks (``BITS`` bits: the time's low 32 bits and an 8-bit checksum). A page
that reads the blocks back off the frame on screen measures glass-to-glass latency (same machine,
same clock). This module holds no tests.
"""

from __future__ import annotations

import subprocess
import threading
import time

import numpy as np

WIDTH, HEIGHT, FPS, GOP = 640, 360, 30, 60
BLOCK = 32  # pixels of one bit's square
TIME_BITS, CHECK_BITS = 32, 8
BITS = TIME_BITS + CHECK_BITS
PER_ROW = WIDTH // BLOCK  # 20 bits a row: two rows

# The page's side: bits read at each block's centre, the checksum checked, the latency to Date.now().
JS_DECODE = f"""
function readStamp(ctx) {{
  const data = ctx.getImageData(0, 0, {WIDTH}, {2 * BLOCK}).data;
  let value = 0, check = 0;
  for (let i = 0; i < {BITS}; i++) {{
    const x = (i % {PER_ROW}) * {BLOCK} + {BLOCK // 2};
    const y = Math.floor(i / {PER_ROW}) * {BLOCK} + {BLOCK // 2};
    const bit = data[(y * {WIDTH} + x) * 4] > 128 ? 1 : 0;
    if (i < {TIME_BITS}) value = value * 2 + bit; else check = check * 2 + bit;
  }}
  let sum = 0;
  for (let k = 0; k < 4; k++) sum += Math.floor(value / 2 ** (8 * k)) % 256;
  return (sum % 256) === check ? value : null;
}}
function latencyOf(stamp) {{ return ((Date.now() % 2 ** 32) - stamp + 2 ** 32) % 2 ** 32; }}
"""


def stamp_bits(millis: int) -> list[int]:
    value = millis % 2**32
    check = sum((value >> (8 * k)) & 0xFF for k in range(4)) % 256
    return [(value >> (TIME_BITS - 1 - i)) & 1 for i in range(TIME_BITS)] + [
        (check >> (CHECK_BITS - 1 - i)) & 1 for i in range(CHECK_BITS)
    ]


def picture(index: int, millis: int) -> bytes:
    """One gray frame: the stamp's blocks on top, a moving bar below (so the encoder has motion)."""
    image = np.full((HEIGHT, WIDTH), 96, np.uint8)
    bar = (index * 8) % WIDTH
    image[2 * BLOCK + 8 :, bar : bar + 16] = 230
    for i, bit in enumerate(stamp_bits(millis)):
        x, y = (i % PER_ROW) * BLOCK, (i // PER_ROW) * BLOCK
        image[y : y + BLOCK, x : x + BLOCK] = 255 if bit else 0
    return image.tobytes()


class BarcodeCamera:
    """ffmpeg pushing the stamped pictures to ``url`` in real time (a thread paints and pipes them),
    with ``audio`` a 440 Hz tone as AAC beside them, until ``stop``; stopped by PID."""

    def __init__(self, url: str, audio: bool = False) -> None:
        args = ["ffmpeg", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "gray"]
        args += ["-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS), "-i", "-"]
        if audio:
            args += ["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
            args += ["-map", "0:v", "-map", "1:a", "-c:a", "aac", "-b:a", "64k"]
        args += ["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p"]
        args += ["-g", str(GOP), "-keyint_min", str(GOP), "-f", "rtsp", "-rtsp_transport", "tcp", url]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._paint, daemon=True)
        self._thread.start()

    def _paint(self) -> None:
        assert self.proc.stdin is not None
        start = time.monotonic()
        index = 0
        while not self._stop.is_set():
            try:
                self.proc.stdin.write(picture(index, int(time.time() * 1000)))
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                return
            index += 1
            time.sleep(max(0.0, start + index / FPS - time.monotonic()))

    def stop(self) -> str:
        """Stop painting and ffmpeg; its error output."""
        self._stop.set()
        self._thread.join(5)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stderr is None:
            return ""
        with self.proc.stderr:
            return self.proc.stderr.read().decode(errors="replace")
