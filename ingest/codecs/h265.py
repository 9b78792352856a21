"""H.265 bitstream helpers (ITU-T H.265 7.4.2.2): NAL unit types and the 2-byte NAL unit header.

Annex B framing is the same as H.264's (``ingest.codecs.h264.split_annexb`` / ``join_annexb``).
"""

from __future__ import annotations

from ingest.errors import ParseError

NAL_TRAIL_N = 0
NAL_RSV_VCL_N14 = 14
NAL_BLA_W_LP = 16
NAL_IDR_W_RADL = 19
NAL_IDR_N_LP = 20
NAL_CRA = 21
NAL_RSV_IRAP_23 = 23
NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34
NAL_AUD = 35
NAL_SEI_PREFIX = 39
NAL_SEI_SUFFIX = 40
NAL_AP = 48  # RFC 7798 aggregation packet
NAL_FU = 49  # RFC 7798 fragmentation unit
NAL_PACI = 50  # RFC 7798 payload content information

PARAMETER_SETS = (NAL_VPS, NAL_SPS, NAL_PPS)


def nal_type(nal: bytes) -> int:
    """The nal_unit_type: bits 1..6 of the first byte of the 2-byte header."""
    if len(nal) < 2:
        raise ParseError(f"H.265 NAL unit {nal.hex()!r}: expected at least the 2-byte NAL header")
    return (nal[0] >> 1) & 0x3F


def is_vcl(kind: int) -> bool:
    """Coded slice segment NAL unit types (0..31, reserved ones included)."""
    return 0 <= kind <= 31


def is_irap(kind: int) -> bool:
    """Intra random access point pictures: BLA, IDR, CRA and the reserved IRAP types (16..23)."""
    return NAL_BLA_W_LP <= kind <= NAL_RSV_IRAP_23


def is_sub_layer_non_reference(kind: int) -> bool:
    """TRAIL_N, TSA_N, STSA_N, RADL_N, RASL_N, RSV_VCL_N10/12/14: not referred to by later pictures."""
    return kind <= NAL_RSV_VCL_N14 and kind % 2 == 0
