"""Authorization headers real publishers sent to camflow (captured once through a logging TCP proxy).

camflow ran with ``CAMFLOW_SECRET=SECRET``; the Digest clients were given the never-expiring publish token
of ``cam1`` (``camflow token publish cam1 --ttl never``) as password, so each response verifies with
``PASSWORD`` and each nonce with the key derived from ``SECRET``, at ``NONCE_TIME``.
"""

from __future__ import annotations

SECRET = b"camflow-test-vector-secret-0123456789"
STREAM = "cam1"
PASSWORD = "v1.eyJhIjoicHVibGlzaCIsImUiOjAsInMiOiJjYW0xIn0.PS9jYEun_rqR62ZDveDu4b5e1z073elYOEYiicvyIFo"

# ffmpeg 5.1: -f rtsp -rtsp_transport udp rtsp://cam1:PASSWORD@127.0.0.1:18555/cam1
# (the server offered Digest and Basic)
FFMPEG_5_1_DIGEST = {
    "ANNOUNCE": (
        "rtsp://127.0.0.1:18555/cam1",
        'Digest username="cam1", realm="camflow", nonce="6b0177f3.29811c8c1a253b1732d6ecfc67c5b33e", '
        'uri="rtsp://127.0.0.1:18555/cam1", response="5e57a8ae699d6b5f626a81c9f764bb40", algorithm="MD5"',
    ),
    "SETUP": (
        "rtsp://127.0.0.1:18555/cam1/streamid=0",
        'Digest username="cam1", realm="camflow", nonce="6b0177f3.29811c8c1a253b1732d6ecfc67c5b33e", '
        'uri="rtsp://127.0.0.1:18555/cam1/streamid=0", response="1c1356a3c144242d1842e34b7a655ee5", '
        'algorithm="MD5"',
    ),
    "RECORD": (
        "rtsp://127.0.0.1:18555/cam1",
        'Digest username="cam1", realm="camflow", nonce="6b0177f3.29811c8c1a253b1732d6ecfc67c5b33e", '
        'uri="rtsp://127.0.0.1:18555/cam1", response="12b62fc795d91a7c0700b2bb89098fa6", algorithm="MD5"',
    ),
}
FFMPEG_5_1_NONCE_TIME = 0x6B0177F3

# GStreamer 1.22: rtspclientsink location=rtsp://127.0.0.1:18555/cam1 user-id=cam1 user-pw=PASSWORD (UDP)
GSTREAMER_1_22_DIGEST = {
    "ANNOUNCE": (
        "rtsp://127.0.0.1:18555/cam1",
        'Digest username="cam1", realm="camflow", nonce="6b0177f5.285cf731f96267a16d4269c522837f1d", '
        'uri="rtsp://127.0.0.1:18555/cam1", response="4a0360e18f3eb824efeb524b234c8c72"',
    ),
    "SETUP": (
        "rtsp://127.0.0.1:18555/cam1/stream=0",
        'Digest username="cam1", realm="camflow", nonce="6b0177f5.285cf731f96267a16d4269c522837f1d", '
        'uri="rtsp://127.0.0.1:18555/cam1/stream=0", response="1c287447fe4a3156e529eaf531d43b84"',
    ),
    "RECORD": (
        "rtsp://127.0.0.1:18555/cam1",
        'Digest username="cam1", realm="camflow", nonce="6b0177f5.285cf731f96267a16d4269c522837f1d", '
        'uri="rtsp://127.0.0.1:18555/cam1", response="86df8f03aa8e22853cd20c02838f66eb"',
    ),
}
GSTREAMER_1_22_NONCE_TIME = 0x6B0177F5

# With --rtsp-auth basic both sent Basic with an expiring (1 h) token; identical bytes from either client.
BASIC_TOKEN = (
    "v1.eyJhIjoicHVibGlzaCIsImUiOjE3OTUyNjE5NzIsInMiOiJjYW0xIn0.CwPURi12zP1TfuXsXXmlYkJY_WJBss8-PJ9IhYcycNg"
)
BASIC_TOKEN_EXPIRES = 1795261972
FFMPEG_5_1_BASIC = (
    "Basic Y2FtMTp2MS5leUpoSWpvaWNIVmliR2x6YUNJc0ltVWlPakUzT1RVeU5qRTVOeklzSW5NaU9pSmpZVzB4SW4wLkN3UFVSaTEy"
    "elAxVGZ1WHNYWG1sWWtKWV9XSkJzczgtUEo5SWhZY3ljTmc="
)
GSTREAMER_1_22_BASIC = FFMPEG_5_1_BASIC

# SETUP Transport headers of the same runs.
FFMPEG_5_1_UDP_TRANSPORT = "RTP/AVP/UDP;unicast;client_port=16436-16437;mode=record"
GSTREAMER_1_22_UDP_TRANSPORT_CAPTURED = "RTP/AVP/UDP;unicast;client_port=52334-52335;mode=RECORD"
