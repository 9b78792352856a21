from __future__ import annotations

import pytest

from camflow.errors import ConfigError
from transcode.ladder import DEFAULT_LADDER, SOURCE, Rung, parse_ladder

GOOD = {
    "source only": ("source", (SOURCE,)),
    "documented example": (
        "source,720p:2500k,360p:800k",
        (SOURCE, Rung("720p", height=720, bitrate=2_500_000), Rung("360p", height=360, bitrate=800_000)),
    ),
    "default bitrate": ("360p", (Rung("360p", height=360, bitrate=720_000),)),
    "default bitrate floor": ("64p", (Rung("64p", height=64, bitrate=200_000),)),
    "spaces and empty items": (" source , ,240p:300k,", (SOURCE, Rung("240p", height=240, bitrate=300_000))),
    "highest height": ("4320p:40000k", (Rung("4320p", height=4320, bitrate=40_000_000),)),
}


@pytest.mark.parametrize(("text", "rungs"), GOOD.values(), ids=GOOD.keys())
def test_parse_ladder(text: str, rungs: tuple[Rung, ...]) -> None:
    assert parse_ladder(text) == rungs


def test_default_ladder_is_source_and_360p() -> None:
    assert [r.name for r in DEFAULT_LADDER] == ["source", "360p"]
    assert DEFAULT_LADDER[0].is_source and not DEFAULT_LADDER[1].is_source


BAD = {
    "empty": ("", "at least one rung"),
    "only commas": (",,", "at least one rung"),
    "duplicate": ("360p,360p:500k", "each once"),
    "duplicate source": ("source,source", "each once"),
    "no p": ("360", "not of the form"),
    "capital P": ("360P", "not of the form"),
    "not a number": ("hdp", "not of the form"),
    "negative": ("-360p", "not of the form"),
    "unicode digits": ("\u0663\u0666\u0660p", "not of the form"),
    "odd height": ("361p", "even and between 64 and 4320"),
    "too small": ("32p", "even and between 64 and 4320"),
    "too large": ("8640p", "even and between 64 and 4320"),
    "bitrate without k": ("360p:800", "bitrate must look like 800k"),
    "bitrate in M": ("360p:1M", "bitrate must look like 800k"),
    "bitrate empty number": ("360p:k", "bitrate must look like 800k"),
    "bitrate negative": ("360p:-800k", "bitrate must look like 800k"),
    "bitrate in unicode digits": ("360p:\u0668\u0660\u0660k", "bitrate must look like 800k"),
    "source with bitrate": ("source:800k", "not of the form"),
}


@pytest.mark.parametrize(("text", "message"), BAD.values(), ids=BAD.keys())
def test_bad_ladders(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_ladder(text)
