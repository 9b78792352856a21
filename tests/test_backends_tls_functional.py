"""Kafka over TLS and SASL/SCRAM, and S3 over HTTPS with a private CA, on real servers.

A Kafka of this module's own (scripts/kafka.sh with KAFKA_TLS=1: PLAINTEXT, SSL with client
certificates, SASL_SSL with SCRAM users made at format time) and a MinIO over HTTPS (scripts/minio.sh
with MINIO_TLS=1), both with certificates the scripts make, on ports below Linux's ephemeral range
and clear of the other tests' (19092/19000, chaos 29092/31092, spool 39092). kafka-python (through
KafkaBus) publishes and consumes a segment event over each secured listener; wrong settings end
`camflow dead` with a clear error, bounded by kafka-python's 30 s bootstrap; `camflow run` takes an
ffmpeg RTSP push to HLS with its bus on SASL_SSL and its store on HTTPS. In `make test` a server
that does not start fails the module (it is not skipped).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from camflow.bus.kafka import KafkaBus
from camflow.bus.security import KafkaSecurity
from camflow.events import TOPIC_RAW, RawSegment, decode, encode
from camflow.store.s3 import S3Location, S3Store
from tests.process import CAMFLOW, camflow_run, ffmpeg_push, free_port, make_clip
from tests.services import services_required
from tests.test_pipeline_functional import fetch
from tests.tls_backends import TlsBackends

pytestmark = pytest.mark.integration

KAFKA_PORT, MINIO_PORT = 30192, 30100  # Kafka: +1 controller, +2 SSL, +3 SASL_SSL; MinIO: +1 console
REFUSAL_BOUND = 60.0  # seconds a refused client may take to say so (kafka-python bootstraps for 30 s)


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBackends]:
    b = TlsBackends(tmp_path_factory.mktemp("tls-backends"), KAFKA_PORT, MINIO_PORT)
    try:
        b.start()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, FileNotFoundError) as exc:
        (pytest.fail if services_required() else pytest.skip)(f"TLS Kafka / MinIO did not start: {exc}")
    try:
        yield b
    finally:
        b.stop()


def segment(stream: str) -> RawSegment:
    return RawSegment(
        stream=stream,
        epoch="20261203T120000000Z",
        seq=1,
        start=0,
        duration=180_000,
        timescale=90_000,
        codecs="avc1.64001f",
        width=640,
        height=360,
        wall_clock=1_795_000_000.0,
        data=b"\x00\x00\x00\x18ftypcmfc" * 64,
    )


async def round_trip(bootstrap: str, security: KafkaSecurity) -> RawSegment:
    """Publish a raw segment event through a KafkaBus and consume it back in a group."""
    bus = KafkaBus(bootstrap, prefix=f"t{uuid.uuid4().hex[:8]}.", security=security)
    await bus.start()
    try:
        sent = segment("cam-tls")
        await bus.publish(TOPIC_RAW, sent.stream, encode(sent))
        consumer = await bus.subscribe([TOPIC_RAW], "tls-test")
        for _ in range(30):  # bounded: 30 polls of 1 s
            message = await consumer.get(1.0)
            if message is not None:
                await consumer.commit(message)
                got = decode(message.value)
                assert isinstance(got, RawSegment)
                return got
        raise AssertionError("the published segment event was not consumed within 30 s")
    finally:
        await bus.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("listener", ["SASL_SSL/SCRAM-SHA-512", "SASL_SSL/SCRAM-SHA-256", "SSL/mutual"])
def test_kafka_bus_publishes_and_consumes_over_tls(backends: TlsBackends, listener: str) -> None:
    if listener.startswith("SASL_SSL"):
        bootstrap, env = backends.sasl_bootstrap, backends.sasl_env(listener.split("/")[1])
    else:
        bootstrap, env = backends.ssl_bootstrap, backends.ssl_env()
    security = KafkaSecurity.from_env(env)
    got = asyncio.run(round_trip(bootstrap, security))
    assert got == segment("cam-tls")


def test_the_scripts_tls_env_is_what_a_client_needs(backends: TlsBackends) -> None:
    printed = subprocess.run(
        ["bash", "scripts/kafka.sh", "tls-env"], env=backends.env, capture_output=True, text=True, check=True
    ).stdout
    exported = dict(
        line.removeprefix("export ").split("=", 1)
        for line in printed.splitlines()
        if line.startswith("export ")
    )
    assert exported == backends.sasl_env()
    assert backends.sasl_password not in printed
    assert f"--kafka {backends.sasl_bootstrap}" in printed


@pytest.mark.timeout(150)
def test_refused_settings_end_with_a_clear_error_in_bounded_time(
    backends: TlsBackends, tmp_path: Path
) -> None:
    """Four wrong setups at once, each through `camflow dead` (a KafkaBus reader): exit 2 and one line
    saying what was refused, within the bound, with no password in anything it printed."""
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password-0815\n")
    other_ca = str(backends.s3_ca)  # a real CA, not the one that signed the broker's certificate
    cases = {
        "wrong password": (
            backends.sasl_bootstrap,
            {**backends.sasl_env(), "CAMFLOW_KAFKA_PASSWORD_FILE": str(wrong)},
            "refused the SCRAM-SHA-512 login of user 'camflow'",
        ),
        "untrusted CA": (
            backends.sasl_bootstrap,
            {**backends.sasl_env(), "CAMFLOW_KAFKA_CA_FILE": other_ca},
            f"the broker's certificate is not trusted by CAMFLOW_KAFKA_CA_FILE={other_ca}",
        ),
        "no client certificate": (
            backends.ssl_bootstrap,
            {
                "CAMFLOW_KAFKA_SECURITY_PROTOCOL": "SSL",
                "CAMFLOW_KAFKA_CA_FILE": backends.ssl_env()["CAMFLOW_KAFKA_CA_FILE"],
            },
            "the broker refused this client's certificate, none (CAMFLOW_KAFKA_CERT_FILE unset)",
        ),
        "plaintext to TLS": (
            backends.sasl_bootstrap,
            {},
            "expected CAMFLOW_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL",
        ),
    }
    started = time.monotonic()
    procs = {
        name: subprocess.Popen(
            [*CAMFLOW, "dead", "--kafka", bootstrap],
            env={**backends.env, "CAMFLOW_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT", **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (bootstrap, env, _) in cases.items()
    }
    outputs: dict[str, tuple[int, str]] = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=max(1.0, REFUSAL_BOUND - (time.monotonic() - started)))
            outputs[name] = (proc.returncode, out + err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    elapsed = time.monotonic() - started
    assert elapsed < REFUSAL_BOUND
    for name, (_, _, expected) in cases.items():
        code, text = outputs[name]
        said = [line for line in text.splitlines() if line.startswith("camflow: ")]
        assert code == 2 and len(said) == 1 and expected in said[0], f"{name}: exit {code}\n{text[-2000:]}"
        assert backends.sasl_password not in text and "not-the-password-0815" not in text, name


@pytest.mark.timeout(90)
def test_an_untrusted_store_certificate_is_a_clear_error_not_an_outage(
    backends: TlsBackends, tmp_path: Path
) -> None:
    """`camflow edge` on the HTTPS store without its CA (the system trust store only) exits 2 at once
    naming what it trusted (the pipeline test below is the same store with its CA)."""
    env = {**backends.s3_env(), "CAMFLOW_S3_CA_FILE": "", "AWS_CA_BUNDLE": ""}
    args = [*CAMFLOW, "edge", "--host", "127.0.0.1", "--http-port", str(free_port())]
    args += ["--s3", backends.s3_url("camflow-untrusted"), "--data-dir", str(tmp_path)]
    started = time.monotonic()
    refused = subprocess.run(args, env={**backends.env, **env}, capture_output=True, text=True, timeout=60)
    said = [line for line in refused.stderr.splitlines() if line.startswith("camflow: ")]
    assert refused.returncode == 2 and len(said) == 1, refused.stderr[-2000:]
    assert "its certificate is not trusted by the system trust store" in said[0], said
    assert time.monotonic() - started < 30


@pytest.mark.timeout(240)
def test_pipeline_on_sasl_ssl_kafka_and_https_s3(backends: TlsBackends, tmp_path: Path) -> None:
    """ffmpeg pushes 8 s of RTSP into `camflow run --kafka (SASL_SSL) --s3 https://`; the edge serves
    HLS whose segments decode, and they are in the bucket, read over HTTPS with the test CA."""
    clip = make_clip(tmp_path / "clip.mp4", 8, size="640x360", rate=25, gop=25)
    run_id = uuid.uuid4().hex[:10]
    bucket = f"camflow-tls-{run_id}"
    extra = [
        *("--kafka", backends.sasl_bootstrap, "--kafka-prefix", f"t{run_id}."),
        *("--s3", backends.s3_url(bucket), "--ladder", "source", "--segment-duration", "1"),
    ]
    env = {**backends.sasl_env(), **backends.s3_env(), "AWS_CA_BUNDLE": "/nonexistent/not-used.pem"}
    with camflow_run(tmp_path, extra, env) as cf:
        view = cf.token("view", "cam1")
        # The camera publishes as a device: the registry's compacted topic is read over SASL_SSL too.
        kafka = ["--kafka", backends.sasl_bootstrap, "--kafka-prefix", f"t{run_id}."]
        added = subprocess.run(
            [*CAMFLOW, "device", "add", "cam1", *kafka],
            env=cf.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert added.returncode == 0, added.stderr[-2000:]
        credential = added.stdout.strip().splitlines()[-1]
        time.sleep(2.0)  # the ingest node follows the registry within a poll (0.5 s)
        pushed = ffmpeg_push(clip, cf.rtsp_url("cam1", credential), timeout=60)
        assert pushed.returncode == 0, pushed.stderr
        playlist_url = cf.http_url(f"/live/cam1/source.m3u8?token={view}")
        deadline, playlist = time.monotonic() + 90, ""
        while time.monotonic() < deadline:  # bounded: 90 s for the last segment to be packaged
            status, playlist = fetch(playlist_url)
            if status == 200 and "#EXT-X-ENDLIST" in playlist:
                break
            time.sleep(0.5)
        assert "#EXT-X-ENDLIST" in playlist, f"no ended playlist within 90 s:\n{playlist}\n{cf.log[-3000:]}"
        decoded = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", playlist_url, "-f", "null", "-"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert decoded.returncode == 0 and decoded.stderr.strip() == "", decoded.stderr
        _, streams = fetch(cf.http_url(f"/api/streams?token={cf.token('admin', '*')}"))
        _, health = fetch(cf.http_url("/healthz"))
        # The operators' readers of the same bus: the health feed and the dead-letter topic.
        tail = subprocess.run(
            [*CAMFLOW, "tail", *kafka, "--json", "--since", "300", "--duration", "3"],
            env=cf.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert tail.returncode == 0 and '"stream":"cam1"' in tail.stdout, tail.stderr[-2000:]
        dead = subprocess.run(
            [*CAMFLOW, "dead", *kafka], env=cf.env, capture_output=True, text=True, timeout=60
        )
        assert dead.returncode == 0 and "0 dead letters" in dead.stderr, dead.stderr[-2000:]
    keys = asyncio.run(list_bucket(backends, bucket))
    assert any(key.endswith(".m4s") for key in keys), keys
    assert "protocol=SASL_SSL" in cf.log or '"protocol": "SASL_SSL"' in cf.log, cf.log[-3000:]
    for shown in (cf.log, cf.output, streams, health, tail.stdout + tail.stderr, dead.stderr):
        assert backends.sasl_password not in shown
        assert credential not in shown


async def list_bucket(backends: TlsBackends, bucket: str) -> list[str]:
    """The bucket's keys, read by an S3Store over HTTPS that trusts the test CA (CAMFLOW_S3_CA_FILE)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in backends.s3_env().items():
            patch.setenv(name, value)
        store = S3Store(S3Location.parse(backends.s3_url(bucket)))
    await store.start()
    return await store.list("")
