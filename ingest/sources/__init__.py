"""Where media comes in, one folder per source: ``rtsp`` (cameras pushing RTSP, over ``rtp``: RTP
packets, depacketizers one module per payload format, the jitter buffer), ``whip`` (WebRTC via aiortc),
``pull`` (cameras pulled with PyAV's RTSP client).

Each source turns its protocol into codec-neutral units (``ingest.media.units.AccessUnit``,
``ingest.codecs.aac.AudioUnit``, sender-report timing) and hands them to one media path
(``ingest.media.publisher.Publisher``). A new source (RTMP, SRT) is a new folder here that does the
same, nothing else. Sources do not import each other (``pull`` and ``rtsp`` may share ``rtp``).
"""
