"""argparse types shared by the ``camflow`` command line's flag modules (``args``, ``limit_args``)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number")
    return value


def count0(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number (0 or more)")
    return int(text)


_SIZE_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def size(text: str) -> int:
    """``2G``, ``500M``, ``64K`` (binary units, an optional trailing ``B``/``iB``) or plain bytes."""
    body = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = _SIZE_UNITS.get(body[-1:])
    try:
        value = float(body[:-1] if unit else body) * (unit or 1)
    except ValueError:
        value = 0.0
    if not (value >= 1 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a size like 2G, 500M, 64K or a number of bytes")
    return int(value)


def at_least_one(unit: str) -> Callable[[str], int]:
    """An argparse type: a whole number of ``unit`` >= 1."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of {unit} >= 1")
        return value

    return parse
