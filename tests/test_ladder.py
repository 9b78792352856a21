from __future__ import annotations

from pathlib import Path

import pytest

from camflow.errors import ConfigError
from transcode.ladder import DEFAULT_LADDER, SOURCE, Rung, default_bitrate, load_ladder_file, parse_ladder

GOOD = {
    "source only": ("source", (SOURCE,)),
    "documented example": (
        "source,720p:2500k,360p:800k",
        (SOURCE, Rung("720p", height=720, bitrate=2_500_000), Rung("360p", height=360, bitrate=800_000)),
    ),
    "default bitrate": ("360p", (Rung("360p", height=360),)),
    "megabits": ("1080p:5M", (Rung("1080p", height=1080, bitrate=5_000_000),)),
    "maxrate and profile": (
        "360p:800k:1200k:baseline",
        (Rung("360p", height=360, bitrate=800_000, maxrate=1_200_000, profile="baseline"),),
    ),
    "source with a bitrate for when it must be encoded": (
        "source:4M",
        (Rung("source", bitrate=4_000_000),),
    ),
    "spaces and empty items": (" source , ,240p:300k,", (SOURCE, Rung("240p", height=240, bitrate=300_000))),
    "highest height": ("4320p:40000k", (Rung("4320p", height=4320, bitrate=40_000_000),)),
}


@pytest.mark.parametrize(("text", "rungs"), GOOD.values(), ids=GOOD.keys())
def test_parse_ladder(text: str, rungs: tuple[Rung, ...]) -> None:
    assert parse_ladder(text) == rungs


def test_default_ladder_is_source_720p_360p() -> None:
    assert [(r.name, r.height) for r in DEFAULT_LADDER] == [("source", None), ("720p", 720), ("360p", 360)]
    assert DEFAULT_LADDER[0].is_source and not DEFAULT_LADDER[1].is_source


def test_targets_from_height_when_not_set() -> None:
    rung = Rung("720p", height=720)
    assert rung.target_bitrate(720) == default_bitrate(720) == 2_488_000
    assert rung.target_maxrate(720) == 2_488_000 * 3 // 2
    assert Rung("360p", height=360, bitrate=800_000, maxrate=1_000_000).target_maxrate(360) == 1_000_000


BAD = {
    "empty": ("", "at least one rung"),
    "only commas": (",,", "at least one rung"),
    "duplicate": ("360p,360p:500k", "each once"),
    "duplicate source": ("source,source", "each once"),
    "no p": ("360", "'360' is not of the form"),
    "capital P": ("360P", "not of the form"),
    "not a number": ("hdp", "not of the form"),
    "negative": ("-360p", "not of the form"),
    "unicode digits": ("\u0663\u0666\u0660p", "not of the form"),
    "odd height": ("361p", "even and between 64 and 4320"),
    "too small": ("32p", "even and between 64 and 4320"),
    "too large": ("8640p", "even and between 64 and 4320"),
    "bitrate without unit": ("360p:800", "'800': expected a bitrate like 800k"),
    "bitrate in G": ("360p:1G", "expected a bitrate like 800k"),
    "bitrate empty number": ("360p:k", "expected a bitrate like 800k"),
    "bitrate negative": ("360p:-800k", "expected a bitrate like 800k"),
    "bitrate in unicode digits": ("360p:\u0668\u0660\u0660k", "expected a bitrate like 800k"),
    "bitrate too low": ("360p:10k", "between 50000 and 200000000"),
    "empty field": ("360p::900k", "not of the form"),
    "too many fields": ("360p:800k:900k:main:x", "not of the form"),
    "maxrate below bitrate": ("360p:800k:600k", "maxrate '600k' is below the bitrate"),
    "unknown profile": ("360p:800k:900k:high10", "profile 'high10': expected one of baseline, main, high"),
}


@pytest.mark.parametrize(("text", "message"), BAD.values(), ids=BAD.keys())
def test_bad_ladders(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_ladder(text)


TOML = """
[[rungs]]
name = "source"

[[rungs]]
height = 720
bitrate = "2500k"
maxrate = "3M"
profile = "high"

[[rungs]]
name = "low"
height = 360
bitrate = 800000
preset = "faster"
"""

YAML = """
rungs:
  - source
  - {height: 720, bitrate: 2500k, maxrate: 3M, profile: high}
  - name: low
    height: 360
    bitrate: 800000
    preset: faster
"""

EXPECTED = (
    SOURCE,
    Rung("720p", height=720, bitrate=2_500_000, maxrate=3_000_000, profile="high"),
    Rung("low", height=360, bitrate=800_000, preset="faster"),
)


@pytest.mark.parametrize(("suffix", "text"), [(".toml", TOML), (".yaml", YAML), (".yml", YAML)])
def test_ladder_files(tmp_path: Path, suffix: str, text: str) -> None:
    path = tmp_path / f"ladder{suffix}"
    path.write_text(text)
    assert load_ladder_file(path) == EXPECTED


BAD_FILES = {
    "not toml": (".toml", "rungs = [", "is not valid TOML"),
    "not yaml": (".yaml", "rungs: [source", "is not valid YAML"),
    "other extension": (".json", "{}", "expected a .toml, .yaml or .yml file"),
    "no rungs key": (".toml", "ladder = ['source']", "expected exactly one key, rungs"),
    "extra key": (".yaml", "rungs: [source]\nfoo: 1", "expected exactly one key, rungs"),
    "rungs not a list": (".yaml", "rungs: source", "holding a list"),
    "empty list": (".yaml", "rungs: []", "at least one rung"),
    "unknown key": (".yaml", "rungs: [{height: 360, fps: 30}]", r"rung 1: unknown key\(s\) \['fps'\]"),
    "height as text": (
        ".yaml",
        "rungs: [{height: '360'}]",
        "rung 1 height '360': expected an integer height",
    ),
    "odd height": (".toml", "[[rungs]]\nheight = 361", "rung 1 height 361: height must be even"),
    "no height": (".yaml", "rungs: [{name: hd}]", "rung 'hd' has no height"),
    "bad bitrate": (".yaml", "rungs: [{height: 360, bitrate: fast}]", "bitrate 'fast': expected a bitrate"),
    "bad preset": (".yaml", "rungs: [{height: 360, preset: quick}]", "preset 'quick': expected one of"),
    "reserved name": (".yaml", "rungs: [{name: source-hevc, height: 360}]", "name 'source-hevc' must be"),
    "bad name": (".yaml", "rungs: [{name: 'HD!', height: 360}]", "name 'HD!' must be"),
    "same height twice": (".yaml", "rungs: [360p, {name: low, height: 360}]", "two rungs of the same height"),
    "item not a rung": (".yaml", "rungs: [[360]]", r"rung 1 \[360\]: expected a string"),
    "bad string item": (".yaml", "rungs: [360x]", "'360x' is not of the form"),
}


@pytest.mark.parametrize(("suffix", "text", "message"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_ladder_files(tmp_path: Path, suffix: str, text: str, message: str) -> None:
    path = tmp_path / f"ladder{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_ladder_file(path)


def test_missing_ladder_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml' cannot be read"):
        load_ladder_file(tmp_path / "nope.toml")
