"""RFC 6381 ``CODECS`` strings for HLS, from parameter sets. Bytes in, strings out.

- H.264: ``avc1.PPCCLL``: profile_idc, the constraint-flags byte and level_idc of the SPS.
- H.265: ``hvc1.<space><profile>.<compat>.<tier><level>[.<constraints>]`` (ISO/IEC 14496-15
  annex E): profile space as '', A, B or C; general_profile_idc in decimal; the 32
  compatibility flags bit-reversed, in hex without leading zeros; tier L or H and
  general_level_idc in decimal; the six constraint bytes in hex, trailing zero bytes left out.

Accepted inputs: an SPS NAL unit (without start code), Annex B bytes holding one, or the
``extradata`` FFmpeg gives a stream (``avcC`` / ``hvcC`` records or Annex B).
"""

from __future__ import annotations

from camflow.errors import MediaFormatError

H264_SPS = 7
H265_SPS = 33


def remove_emulation_prevention(data: bytes) -> bytes:
    """NAL payload to RBSP: drop each 0x03 that follows two zero bytes (H.264 and H.265 alike)."""
    if b"\x00\x00\x03" not in data:
        return data
    out = bytearray()
    zeros = 0
    for byte in data:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _annexb_nalus(data: bytes) -> list[bytes]:
    nalus, pos = [], data.find(b"\x00\x00\x01")
    while pos >= 0:
        nxt = data.find(b"\x00\x00\x01", pos + 3)
        nalus.append(data[pos + 3 : len(data) if nxt < 0 else nxt].rstrip(b"\x00"))
        pos = nxt
    return [n for n in nalus if n]


def avc1(sps: bytes) -> str:
    if len(sps) < 4 or sps[0] & 0x1F != H264_SPS:
        raise MediaFormatError(f"H.264 SPS expected (NAL type 7), got {sps[:4].hex()!r}")
    return "avc1." + sps[1:4].hex()


def _hvc1_from_ptl(ptl: bytes) -> str:
    """From the 12 bytes of general_profile_tier_level (space/tier/profile, compat, constraints, level)."""
    if len(ptl) < 12:
        raise MediaFormatError(f"H.265 profile_tier_level of {len(ptl)} bytes, expected 12")
    space = "".join(("", "A", "B", "C")[ptl[0] >> 6])
    tier = "H" if ptl[0] & 0x20 else "L"
    profile = ptl[0] & 0x1F
    compat = int.from_bytes(ptl[1:5], "big")
    reversed_compat = int(f"{compat:032b}"[::-1], 2)
    constraints = ptl[5:11].rstrip(b"\x00")
    level = ptl[11]
    text = f"hvc1.{space}{profile}.{reversed_compat:X}.{tier}{level}"
    if constraints:
        text += "." + ".".join(f"{b:X}" for b in constraints)
    return text


def hvc1(sps: bytes) -> str:
    if len(sps) < 3 or (sps[0] >> 1) & 0x3F != H265_SPS:
        raise MediaFormatError(f"H.265 SPS expected (NAL type 33), got {sps[:4].hex()!r}")
    rbsp = remove_emulation_prevention(sps[2:])  # after the 2-byte NAL header
    return _hvc1_from_ptl(rbsp[1:13])  # after vps_id(4) max_sub_layers(3) temporal_id_nesting(1)


def from_extradata(extradata: bytes) -> str:
    """The codecs string of a stream from its FFmpeg extradata (avcC, hvcC, or Annex B)."""
    if not extradata:
        raise MediaFormatError("stream has no extradata to read the codec from")
    if extradata[0] == 1 and len(extradata) >= 23 and _looks_like_hvcc(extradata):
        return _hvc1_from_ptl(extradata[1:13])
    if extradata[0] == 1 and len(extradata) >= 4:
        return "avc1." + extradata[1:4].hex()
    for nal in _annexb_nalus(extradata):
        if nal[0] & 0x1F == H264_SPS and not (nal[0] & 0x80):
            try:
                return avc1(nal)
            except MediaFormatError:
                pass
        if (nal[0] >> 1) & 0x3F == H265_SPS:
            return hvc1(nal)
    raise MediaFormatError(f"no SPS in extradata {extradata[:8].hex()!r}...")


def avcc_nal_units(record: bytes) -> tuple[list[bytes], int]:
    """ISO/IEC 14496-15 AVCDecoderConfigurationRecord: SPS and PPS, and the NAL length size."""
    if len(record) < 7:
        return [], 4
    nalus: list[bytes] = []
    pos = 5
    for count_mask in (0x1F, 0xFF):  # SPS count (5 bits), then PPS count
        if pos >= len(record):
            break
        count = record[pos] & count_mask
        pos += 1
        for _ in range(count):
            size = int.from_bytes(record[pos : pos + 2], "big")
            nalus.append(record[pos + 2 : pos + 2 + size])
            pos += 2 + size
    return nalus, (record[4] & 0x03) + 1


def hvcc_nal_units(record: bytes) -> tuple[list[bytes], int]:
    """ISO/IEC 14496-15 HEVCDecoderConfigurationRecord: the NAL units of its arrays (VPS, SPS, PPS,
    SEI), and the NAL length size. A truncated record gives what it holds."""
    if len(record) < 23:
        return [], 4
    nalus: list[bytes] = []
    pos = 23
    for _ in range(record[22]):  # numOfArrays: NAL_unit_type (1 byte), numNalus (2 bytes), the units
        count = int.from_bytes(record[pos + 1 : pos + 3], "big")
        pos += 3
        for _ in range(count):
            if pos + 2 > len(record):
                return nalus, (record[21] & 0x03) + 1
            size = int.from_bytes(record[pos : pos + 2], "big")
            nalus.append(record[pos + 2 : pos + 2 + size])
            pos += 2 + size
    return nalus, (record[21] & 0x03) + 1


def parameter_set_nal_units(extradata: bytes) -> tuple[list[bytes], int]:
    """The NAL units of an avcC or hvcC record (FFmpeg's extradata of an MP4 video stream) and the
    NAL length size of its samples; none for anything else."""
    if not extradata or extradata[0] != 1:
        return [], 4
    if _looks_like_hvcc(extradata):
        return hvcc_nal_units(extradata)
    return avcc_nal_units(extradata)


def _looks_like_hvcc(extradata: bytes) -> bool:
    # hvcC: byte 21 low 2 bits = lengthSizeMinusOne, byte 22 = numOfArrays, then arrays of NAL types 32-34.
    if len(extradata) < 24:
        return False
    return 1 <= extradata[22] <= 16 and (extradata[23] & 0x3F) in (32, 33, 34, 39)
