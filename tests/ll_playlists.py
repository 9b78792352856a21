"""Low-latency media playlists as the packager writes them (RFC 8216bis, docs/low-latency.md), for edge tests.

``ll_playlist(msn, part)`` ends at ``End(msn, part)``: segments up to ``msn - 1`` complete (``msn``
too when ``part`` is -1), then the parts 0..``part`` of segment ``msn``, the preload hint naming
the next part, and a rendition report. Segment ``seq`` is its media sequence number here.
"""

from __future__ import annotations

EPOCH = "20261203T170000000Z"
PARTS = 10  # per segment
PART_TARGET = 0.2
TARGET = 2
WINDOW = 10  # segments listed


def part_uri(seq: int, part: int, rendition: str = "source", epoch: str = EPOCH) -> str:
    return f"{epoch}/{rendition}/{seq:08d}.{part:03d}.m4s"


def ll_playlist(
    msn: int,
    part: int,
    *,
    rendition: str = "source",
    epoch: str = EPOCH,
    window: int = WINDOW,
    endlist: bool = False,
    blocking: bool = True,
) -> str:
    complete = msn if part == -1 else msn - 1  # the last complete segment
    first = max(0, complete - window + 1)
    control = f"CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={3 * PART_TARGET:.3f},CAN-SKIP-UNTIL={6 * TARGET:.1f}"
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:9",
        f"#EXT-X-TARGETDURATION:{TARGET}",
        *([f"#EXT-X-SERVER-CONTROL:{control}"] if blocking else []),
        f"#EXT-X-PART-INF:PART-TARGET={PART_TARGET:.3f}",
        f"#EXT-X-MEDIA-SEQUENCE:{first}",
        f'#EXT-X-MAP:URI="{epoch}/{rendition}/init.mp4"',
    ]

    def parts_of(seq: int, count: int) -> list[str]:
        return [
            f'#EXT-X-PART:DURATION={PART_TARGET:.3f},URI="{part_uri(seq, p, rendition, epoch)}"'
            + (",INDEPENDENT=YES" if p == 0 else "")
            for p in range(count)
        ]

    for seq in range(first, complete + 1):
        if seq == first:
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:2026-12-03T17:00:{seq * TARGET % 60:02d}.000Z")
        if seq > complete - 3:
            lines += parts_of(seq, PARTS)
        lines += [f"#EXTINF:{TARGET:.3f},", f"{epoch}/{rendition}/{seq:08d}.m4s"]
    if endlist:
        lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"
    if part >= 0:
        lines += parts_of(msn, part + 1)
    nxt = (msn, part + 1) if 0 <= part < PARTS - 1 else (msn + 1, 0)
    lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{part_uri(*nxt, rendition, epoch)}"')
    lines.append(f'#EXT-X-RENDITION-REPORT:URI="audio.m3u8",LAST-MSN={msn},LAST-PART={part}')
    return "\n".join(lines) + "\n"
