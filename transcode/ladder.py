"""The rendition ladder: which renditions a segment becomes."""

from __future__ import annotations

from dataclasses import dataclass

from camflow.errors import ConfigError
from camflow.keys import is_rendition


@dataclass(frozen=True)
class Rung:
    """One rendition. ``height`` None means the source itself, stream-copied (no re-encode)."""

    name: str
    height: int | None = None
    bitrate: int = 0  # bits/s target for encoded rungs
    preset: str = "veryfast"
    profile: str = "main"

    @property
    def is_source(self) -> bool:
        return self.height is None


SOURCE = Rung("source")
DEFAULT_LADDER: tuple[Rung, ...] = (SOURCE, Rung("360p", height=360, bitrate=800_000))


def parse_ladder(text: str) -> tuple[Rung, ...]:
    """``source,720p:2500k,360p:800k`` → rungs. A rung is ``source`` or ``<height>p[:<bitrate>k]``."""
    rungs: list[Rung] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if item == "source":
            rungs.append(SOURCE)
            continue
        name, _, rate = item.partition(":")
        if not name.endswith("p") or not name[:-1].isdigit() or not is_rendition(name):
            raise ConfigError(f"ladder rung {item!r} is not of the form source or <height>p[:<kbit/s>k]")
        height = int(name[:-1])
        if not 64 <= height <= 4320 or height % 2:
            raise ConfigError(f"ladder rung {item!r}: height must be even and between 64 and 4320")
        kbps = 0
        if rate:
            if not rate.endswith("k") or not (rate[:-1].isascii() and rate[:-1].isdigit()):
                raise ConfigError(f"ladder rung {item!r}: bitrate must look like 800k")
            kbps = int(rate[:-1])
        else:
            kbps = max(200, height * 2)  # ~ 720 kbit/s at 360p, 1.4 Mbit/s at 720p
        rungs.append(Rung(name, height=height, bitrate=kbps * 1000))
    names = [r.name for r in rungs]
    if not rungs or len(set(names)) != len(names):
        raise ConfigError(f"ladder {text!r} must name at least one rung, each once")
    return tuple(rungs)
