"""What H.264 and H.265 share as NAL-unit codecs: parameter sets re-inserted before a random access
unit that lacks them (the RTP depacketizers and the pulled-source assembler both need it)."""

from __future__ import annotations

from collections.abc import Mapping


def insert_parameter_sets(
    nalus: list[bytes], kinds: list[int], known: Mapping[int, bytes], order: tuple[int, ...], aud: int
) -> list[bytes] | None:
    """A random access unit with the ``known`` parameter sets it lacks inserted, each in its rank of
    ``order`` (VPS, SPS, PPS): before the first present one of a later rank, else after the last present
    one, else after a leading AUD (NAL type ``aud``). None when there was nothing to insert.
    Shared by the RTP depacketizers and the pulled-source assembler (``ingest.sources.pull.assembler``)."""
    out, out_kinds = list(nalus), list(kinds)
    rank = {k: i for i, k in enumerate(order)}
    inserted = False
    for kind in order:
        nal = known.get(kind)
        if kind in out_kinds or nal is None:
            continue
        present = [(i, rank[k]) for i, k in enumerate(out_kinds) if k in rank]
        later = [i for i, r in present if r > rank[kind]]
        if later:
            at = later[0]
        elif present:
            at = present[-1][0] + 1
        else:
            at = 1 if out_kinds and out_kinds[0] == aud else 0
        out.insert(at, nal)
        out_kinds.insert(at, kind)
        inserted = True
    return out if inserted else None
