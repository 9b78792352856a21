"""H.264 bitstream helpers: Annex B framing, NAL unit types and an SPS parser (ITU-T H.264 7.3.2.1)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from camflow.codecs import remove_emulation_prevention
from ingest.errors import ParseError

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
NAL_STAP_A = 24
NAL_FU_A = 28

START_CODE = b"\x00\x00\x00\x01"

# profile_idc values whose SPS carries chroma_format_idc, bit depths and scaling lists.
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


def nal_type(nal: bytes) -> int:
    """The nal_unit_type (low 5 bits of the first byte)."""
    if not nal:
        raise ParseError("empty NAL unit: expected at least the 1-byte NAL header")
    return nal[0] & 0x1F


def is_vcl(nal_unit_type: int) -> bool:
    """True for coded slice NAL unit types (1..5)."""
    return 1 <= nal_unit_type <= 5


def split_annexb(data: bytes) -> list[bytes]:
    """Split an Annex B byte stream (00 00 01 or 00 00 00 01 start codes) into NAL units, no start codes."""
    if not data:
        return []
    first = data.find(b"\x00\x00\x01")
    if first < 0 or any(data[:first]):
        raise ParseError(f"Annex B stream starts with {data[:8].hex()!r}: expected a 00 00 01 start code")
    nalus: list[bytes] = []
    pos = first + 3
    while True:
        nxt = data.find(b"\x00\x00\x01", pos)
        end = len(data) if nxt < 0 else nxt
        nal = data[pos:end].rstrip(b"\x00")  # trailing_zero_8bits / the 4-byte start code's leading zero
        if nal:
            nalus.append(nal)
        if nxt < 0:
            return nalus
        pos = nxt + 3


def join_annexb(nalus: Iterable[bytes]) -> bytes:
    """NAL units to an Annex B byte stream with 4-byte start codes."""
    return b"".join(START_CODE + nal for nal in nalus)


class _BitReader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0  # in bits

    def u(self, bits: int) -> int:
        if self._pos + bits > len(self._data) * 8:
            raise ParseError(f"SPS truncated at bit {self._pos}: expected {bits} more bits")
        value = 0
        for _ in range(bits):
            byte = self._data[self._pos >> 3]
            value = (value << 1) | ((byte >> (7 - (self._pos & 7))) & 1)
            self._pos += 1
        return value

    def flag(self) -> bool:
        return self.u(1) == 1

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ParseError("exp-Golomb code with more than 31 leading zeros: expected a 32-bit value")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _skip_scaling_list(reader: _BitReader, size: int) -> None:
    last, nxt = 8, 8
    for _ in range(size):
        if nxt != 0:
            delta = reader.se()
            if not -128 <= delta <= 127:
                raise ParseError(f"delta_scale {delta}: expected -128..127")
            nxt = (last + delta + 256) % 256
        last = last if nxt == 0 else nxt


def _checked(name: str, value: int, maximum: int) -> int:
    if value > maximum:
        raise ParseError(f"SPS {name} {value}: expected at most {maximum}")
    return value


@dataclass(frozen=True)
class Sps:
    """The fields of a sequence parameter set that a packager needs."""

    profile_idc: int
    constraint_flags: int  # the byte holding constraint_set0..5_flag
    level_idc: int
    width: int
    height: int
    fps: float | None  # from VUI timing info, None when absent

    @property
    def codecs(self) -> str:
        """RFC 6381 codecs parameter, e.g. ``avc1.640028``."""
        return f"avc1.{self.profile_idc:02x}{self.constraint_flags:02x}{self.level_idc:02x}"

    @classmethod
    def parse(cls, nal: bytes) -> Sps:
        """Parse an SPS NAL unit (with its 1-byte header, emulation prevention bytes allowed)."""
        if not nal or nal_type(nal) != NAL_SPS:
            raise ParseError(f"NAL {nal[:1].hex()!r}: expected an SPS (nal_unit_type 7)")
        r = _BitReader(remove_emulation_prevention(nal[1:]))
        profile_idc, constraint_flags, level_idc = r.u(8), r.u(8), r.u(8)
        _checked("seq_parameter_set_id", r.ue(), 31)
        chroma_format_idc = 1
        separate_colour_plane = False
        if profile_idc in _HIGH_PROFILES:
            chroma_format_idc = _checked("chroma_format_idc", r.ue(), 3)
            if chroma_format_idc == 3:
                separate_colour_plane = r.flag()
            _checked("bit_depth_luma_minus8", r.ue(), 6)
            _checked("bit_depth_chroma_minus8", r.ue(), 6)
            r.u(1)  # qpprime_y_zero_transform_bypass_flag
            if r.flag():  # seq_scaling_matrix_present_flag
                for i in range(8 if chroma_format_idc != 3 else 12):
                    if r.flag():
                        _skip_scaling_list(r, 16 if i < 6 else 64)
        _checked("log2_max_frame_num_minus4", r.ue(), 12)
        poc_type = _checked("pic_order_cnt_type", r.ue(), 2)
        if poc_type == 0:
            _checked("log2_max_pic_order_cnt_lsb_minus4", r.ue(), 12)
        elif poc_type == 1:
            r.u(1)  # delta_pic_order_always_zero_flag
            r.se()  # offset_for_non_ref_pic
            r.se()  # offset_for_top_to_bottom_field
            for _ in range(_checked("num_ref_frames_in_pic_order_cnt_cycle", r.ue(), 255)):
                r.se()
        r.ue()  # max_num_ref_frames
        r.u(1)  # gaps_in_frame_num_value_allowed_flag
        width_mbs = _checked("pic_width_in_mbs_minus1", r.ue(), 4095) + 1
        height_map_units = _checked("pic_height_in_map_units_minus1", r.ue(), 4095) + 1
        frame_mbs_only = r.flag()
        if not frame_mbs_only:
            r.u(1)  # mb_adaptive_frame_field_flag
        r.u(1)  # direct_8x8_inference_flag
        crop = (0, 0, 0, 0)
        if r.flag():  # frame_cropping_flag
            crop = (r.ue(), r.ue(), r.ue(), r.ue())
        fps = _parse_vui_fps(r) if r.flag() else None

        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        sub_width = 2 if chroma_array_type in (1, 2) else 1
        sub_height = 2 if chroma_array_type == 1 else 1
        crop_x = 1 if chroma_array_type == 0 else sub_width
        crop_y = (1 if chroma_array_type == 0 else sub_height) * (2 - frame_mbs_only)
        width = width_mbs * 16 - crop_x * (crop[0] + crop[1])
        height = (2 - frame_mbs_only) * height_map_units * 16 - crop_y * (crop[2] + crop[3])
        if width <= 0 or height <= 0:
            raise ParseError(f"SPS frame cropping {crop} leaves {width}x{height}: expected a positive size")
        return cls(profile_idc, constraint_flags, level_idc, width, height, fps)


def _parse_vui_fps(r: _BitReader) -> float | None:
    if r.flag() and r.u(8) == 255:  # aspect_ratio_info_present_flag, aspect_ratio_idc Extended_SAR
        r.u(16)
        r.u(16)
    if r.flag():  # overscan_info_present_flag
        r.u(1)
    if r.flag():  # video_signal_type_present_flag
        r.u(3)
        r.u(1)
        if r.flag():  # colour_description_present_flag
            r.u(24)
    if r.flag():  # chroma_loc_info_present_flag
        r.ue()
        r.ue()
    if not r.flag():  # timing_info_present_flag
        return None
    num_units_in_tick, time_scale = r.u(32), r.u(32)
    if num_units_in_tick == 0 or time_scale == 0:
        return None
    return time_scale / (2 * num_units_in_tick)
