"""The edge: HLS playlists and media objects from the store, over HTTP, to viewers with a view token."""

from edge.app import build_app
from edge.service import EdgeServer, run_edge

__all__ = ["EdgeServer", "build_app", "run_edge"]
