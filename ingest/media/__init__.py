"""The one media path every source feeds: units (``units``) → segments (``segmenter``, with
``audio_path`` placing the audio) → fMP4 or NUT (``mux``) → the bus (``publisher``). It knows nothing
of RTP, RTSP or WebRTC; it may use ``ingest.codecs``, never ``ingest.sources``."""
