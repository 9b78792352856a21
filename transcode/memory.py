"""glibc's allocator tuned for a process that transcodes one segment after another.

Every segment opens fresh libx264 encoders (one IDR at the segment's start) and scales into new
frames; each encoder allocates tens of MB of picture buffers and frees them at the segment's
end. With glibc's defaults, blocks that large are ``mmap``-ed and given back to the kernel when
freed, so the next segment faults every page in again: 226,000 minor page faults and 1.9 s of
system time for 20 s of 1080p30 through the 1080p/720p/360p ladder, against 22,000 and 0.4 s
for the ffmpeg CLI, whose one long-lived encoder per rung allocates once.

``keep_freed_memory`` (the transcode pool's process initializer) raises the ``mmap`` threshold
to glibc's 64-bit maximum (32 MiB) and the trim threshold to 512 MiB, so freed buffers stay in
the process's heap and the next segment reuses them: 43,000 faults and 1.0 s of system time on
the same run (``bench transcode`` reports the ratio to the CLI). The cost: a pool process keeps
its peak between segments (there, 366 MB resident after the run instead of 163 MB). Elsewhere
than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 512 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Keep freed memory in this process for reuse; False where the C library has no ``mallopt``."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; musl's is a stub that returns 0.
    mmap_set = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return bool(mmap_set and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
