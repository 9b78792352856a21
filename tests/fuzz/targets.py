"""Every fuzz target, by name (importing this module registers them all)."""

from __future__ import annotations

from tests.fuzz import camflow_targets, edge_targets, rtp_targets, rtsp_targets, store_targets
from tests.fuzz.harness import TARGETS, Target

MODULES = (rtsp_targets, rtp_targets, camflow_targets, store_targets, edge_targets)
__all__ = ["MODULES", "TARGETS", "Target"]
