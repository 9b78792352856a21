"""Codec knowledge, without I/O or transport: H.264 and H.265 NAL units and parameter sets (``h264``,
``h265``, ``nal``), AAC configuration, units and encoder (``aac``), G.711 (``g711``), VP8 (``vp8``)."""
