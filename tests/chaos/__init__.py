"""The chaos suite: faults on real Kafka and MinIO during a real camera push (ffmpeg over RTSP).

Every scenario runs the four services as processes (`camflow ingest`, `transcode`, `package`,
`edge`, as in a deployment), pushes a generated H.264 clip in real time for at least 60 s, injects
one fault through the project's own scripts (scripts/kafka.sh, scripts/minio.sh) or by PID, and
reads what was recorded from the edge's VOD playlist over the push's time range (not from
camflow's own counters). `make chaos` runs every scenario and prints one table
(``python -m tests.chaos``); this package holds no tests itself.
"""
