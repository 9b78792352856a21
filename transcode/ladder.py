"""The rendition ladder: which renditions a segment becomes, from a flag or a file.

A ladder is a tuple of ``Rung``. The ``source`` rung is the camera's own picture: a
stream copy when its codec is browser-playable H.264, else an H.264 encode at the
source resolution (and, for H.265, the original kept as ``source-hevc``). Every other
rung is an H.264 encode scaled to its height; rungs above the source are skipped.

Flag form (``--ladder``), comma-separated::

    source,720p:2500k,360p:800k:1200k:baseline
    <height>p[:<bitrate>[:<maxrate>[:<profile>]]]      bitrates as 800k or 3M

File form (``--ladder-file``, TOML or YAML by extension), a list named ``rungs`` whose
items are either a string in the flag form or a table::

    [[rungs]]
    name = "source"
    [[rungs]]
    height = 720
    bitrate = "2500k"     # or 2500000 (bits/s)
    maxrate = "3750k"     # default 1.5 x bitrate
    profile = "high"      # baseline, main (default), high
    preset = "veryfast"   # a libx264 preset
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from camflow.errors import ConfigError
from camflow.keys import is_rendition

SOURCE_NAME = "source"
HEVC_SOURCE_NAME = "source-hevc"  # the H.265 original, kept beside the H.264 ladder
THUMBS = "thumbs"  # streams/{stream}/{epoch}/thumbs/: not a rendition
RESERVED = frozenset({HEVC_SOURCE_NAME, THUMBS})
PROFILES = ("baseline", "main", "high")
PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)
MIN_HEIGHT, MAX_HEIGHT = 64, 4320
MIN_BITRATE, MAX_BITRATE = 50_000, 200_000_000
RUNG_KEYS = frozenset({"name", "height", "bitrate", "maxrate", "profile", "preset"})


@dataclass(frozen=True)
class Rung:
    """One rendition. ``height`` None means the source resolution (``source``).

    ``bitrate`` and ``maxrate`` are bits/s; 0 means "from the height" (see ``default_bitrate``)
    and 1.5 x bitrate. They apply whenever the rung is encoded (for ``source``: only when the
    camera's codec cannot be stream-copied).
    """

    name: str
    height: int | None = None
    bitrate: int = 0
    maxrate: int = 0
    profile: str = "main"
    preset: str = "veryfast"

    @property
    def is_source(self) -> bool:
        return self.height is None

    def target_bitrate(self, height: int) -> int:
        return self.bitrate or default_bitrate(height)

    def target_maxrate(self, height: int) -> int:
        bitrate = self.target_bitrate(height)
        return max(self.maxrate, bitrate) if self.maxrate else bitrate * 3 // 2


def default_bitrate(height: int) -> int:
    """0.09 bit per pixel of 16:9 at 30 fps: 622 kbit/s at 360p, 2.5 Mbit/s at 720p, 5.6 at 1080p."""
    return max(200_000, round(height * height * 16 / 9 * 30 * 0.09 / 1000) * 1000)


SOURCE = Rung(SOURCE_NAME)
DEFAULT_LADDER: tuple[Rung, ...] = (
    SOURCE,
    Rung("720p", height=720, bitrate=2_500_000),
    Rung("360p", height=360, bitrate=800_000),
)


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _bitrate(value: object, what: str) -> int:
    """800k, 3M, or an integer of bits/s."""
    if isinstance(value, int) and not isinstance(value, bool):
        bits = value
    elif isinstance(value, str) and value[-1:] in ("k", "M") and _digits(value[:-1]):
        bits = int(value[:-1]) * (1000 if value[-1] == "k" else 1_000_000)
    else:
        raise ConfigError(f"{what} {value!r}: expected a bitrate like 800k, 3M or bits/s as an integer")
    if not MIN_BITRATE <= bits <= MAX_BITRATE:
        raise ConfigError(f"{what} {value!r}: expected between {MIN_BITRATE} and {MAX_BITRATE} bits/s")
    return bits


def _height(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} {value!r}: expected an integer height in pixels, e.g. 720")
    if not MIN_HEIGHT <= value <= MAX_HEIGHT or value % 2:
        raise ConfigError(f"{what} {value!r}: height must be even and between {MIN_HEIGHT} and {MAX_HEIGHT}")
    return value


def _choice(value: object, allowed: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{what} {value!r}: expected one of {', '.join(allowed)}")
    return value


def _rung(
    name: str,
    height: int | None,
    bitrate: object,
    maxrate: object,
    profile: object,
    preset: object,
    what: str,
) -> Rung:
    if not is_rendition(name) or name in RESERVED:
        raise ConfigError(
            f"{what}: name {name!r} must be 1-32 of a-z 0-9 _ - and not one of {sorted(RESERVED)} or master"
        )
    bits = _bitrate(bitrate, f"{what} bitrate") if bitrate is not None else 0
    peak = _bitrate(maxrate, f"{what} maxrate") if maxrate is not None else 0
    floor = bits or (default_bitrate(height) if height else 0)
    if peak and peak < floor:
        raise ConfigError(f"{what}: maxrate {maxrate!r} is below the bitrate; expected maxrate >= bitrate")
    return Rung(
        name,
        height=height,
        bitrate=bits,
        maxrate=peak,
        profile=_choice(profile, PROFILES, f"{what} profile"),
        preset=_choice(preset, PRESETS, f"{what} preset"),
    )


def parse_rung(item: str) -> Rung:
    """``source`` or ``<height>p[:<bitrate>[:<maxrate>[:<profile>]]]``."""
    what = f"ladder rung {item!r}"
    form = f"{what} is not of the form source or <height>p[:<bitrate>[:<maxrate>[:<profile>]]]"
    head, *rest = item.split(":")
    if head == SOURCE_NAME:
        height: int | None = None
    elif head.endswith("p") and _digits(head[:-1]):
        height = _height(int(head[:-1]), what)
    else:
        raise ConfigError(form)
    if len(rest) > 3 or any(not part for part in rest):
        raise ConfigError(form)
    bitrate, maxrate, profile = [*rest, None, None, None][:3]
    return _rung(head, height, bitrate, maxrate, profile or "main", "veryfast", what)


def _check(rungs: list[Rung], origin: str) -> tuple[Rung, ...]:
    names = [r.name for r in rungs]
    if not rungs or len(set(names)) != len(names):
        raise ConfigError(f"ladder {origin} must name at least one rung, each once (got {names})")
    heights = [r.height for r in rungs if r.height is not None]
    if len(set(heights)) != len(heights):
        raise ConfigError(f"ladder {origin} has two rungs of the same height (got {heights})")
    return tuple(rungs)


def parse_ladder(text: str) -> tuple[Rung, ...]:
    """``source,720p:2500k,360p:800k`` → rungs."""
    items = [part.strip() for part in text.split(",")]
    return _check([parse_rung(item) for item in items if item], repr(text))


def _table_rung(item: dict[str, Any], where: str) -> Rung:
    unknown = sorted(set(item) - RUNG_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(RUNG_KEYS)}")
    raw_height = item.get("height")
    height = None if raw_height is None else _height(raw_height, f"{where} height")
    name = item.get("name", SOURCE_NAME if height is None else f"{height}p")
    if not isinstance(name, str):
        raise ConfigError(f"{where} name {name!r}: expected a string")
    if height is None and name != SOURCE_NAME:
        raise ConfigError(f"{where}: rung {name!r} has no height; only the source rung may leave it out")
    return _rung(
        name,
        height,
        item.get("bitrate"),
        item.get("maxrate"),
        item.get("profile", "main"),
        item.get("preset", "veryfast"),
        where,
    )


def ladder_from_config(config: object, origin: str) -> tuple[Rung, ...]:
    """Rungs from a parsed TOML/YAML document ``{"rungs": [...]}``."""
    if not isinstance(config, dict) or set(config) != {"rungs"} or not isinstance(config["rungs"], list):
        raise ConfigError(f"ladder file {origin}: expected exactly one key, rungs, holding a list")
    rungs: list[Rung] = []
    for i, item in enumerate(config["rungs"]):
        where = f"ladder file {origin} rung {i + 1}"
        if isinstance(item, str):
            rungs.append(parse_rung(item))
        elif isinstance(item, dict):
            rungs.append(_table_rung(item, where))
        else:
            raise ConfigError(f"{where} {item!r}: expected a string like 720p:2500k or a table")
    return _check(rungs, origin)


def load_ladder_file(path: Path) -> tuple[Rung, ...]:
    """A ladder from a ``.toml``, ``.yaml`` or ``.yml`` file."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"ladder file {str(path)!r} cannot be read: {exc}") from exc
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            config: object = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"ladder file {str(path)!r} is not valid TOML: {exc}") from exc
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"ladder file {str(path)!r} is not valid YAML: {exc}") from exc
    else:
        raise ConfigError(f"ladder file {str(path)!r}: expected a .toml, .yaml or .yml file")
    return ladder_from_config(config, repr(str(path)))
