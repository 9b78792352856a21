"""G.711 (ITU-T G.711: PCMU µ-law, PCMA A-law) to and from signed 16-bit PCM: a 256-entry table per
law, applied with numpy."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

PCMU = "PCMU"
PCMA = "PCMA"


def _ulaw_to_linear(value: int) -> int:
    value = ~value & 0xFF
    exponent, mantissa = (value >> 4) & 0x07, value & 0x0F
    sample = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -sample if value & 0x80 else sample


def _alaw_to_linear(value: int) -> int:
    value ^= 0x55
    exponent, mantissa = (value >> 4) & 0x07, value & 0x0F
    sample = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
    return sample if value & 0x80 else -sample


ULAW_TABLE: npt.NDArray[np.int16] = np.array([_ulaw_to_linear(i) for i in range(256)], dtype="<i2")
ALAW_TABLE: npt.NDArray[np.int16] = np.array([_alaw_to_linear(i) for i in range(256)], dtype="<i2")


def decode(law: str, payload: bytes) -> bytes:
    """G.711 bytes to signed 16-bit little-endian PCM."""
    table = ULAW_TABLE if law == PCMU else ALAW_TABLE
    return table[np.frombuffer(payload, dtype=np.uint8)].tobytes()


def encode(law: str, pcm: bytes) -> bytes:
    """Signed 16-bit little-endian PCM to G.711 (nearest table entry; for tests and test vectors)."""
    table = (ULAW_TABLE if law == PCMU else ALAW_TABLE).astype(np.int32)
    order = np.argsort(table)
    ordered = table[order]
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    right = np.clip(np.searchsorted(ordered, samples), 1, 255)
    nearer_left = (samples - ordered[right - 1]) <= (ordered[right] - samples)
    return order[np.where(nearer_left, right - 1, right)].astype(np.uint8).tobytes()
