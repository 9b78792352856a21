"""The chart's command lines run: each service started with the exact args `helm template` renders
(only addresses, ports, the Kafka prefix and S3 bucket swapped for the test's), its liveness and
readiness probes answered on the port and paths the chart probes, /metrics scraped, and SIGTERM ending
it cleanly (exit 0).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests import services
from tests.process import CAMFLOW, free_port, stop_process
from tests.test_helm_chart import containers, helm_binary, of_kind, render

pytestmark = pytest.mark.integration
PORT_FLAGS = ("--metrics-port", "--http-port", "--rtsp-port")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        return 0, str(exc)


def local_args(
    args: list[str], tmp: Path, kafka: str, s3: str, prefix: str
) -> tuple[list[str], dict[int, int]]:
    """The chart's args for this machine; returns them and chart port -> local port."""
    out, ports = list(args), {}
    swap = {
        "--host": "127.0.0.1",
        "--metrics-host": "127.0.0.1",
        "--kafka": kafka,
        "--s3": f"{s3.rstrip('/')}/{prefix}",
        "--processes": "1",
    }
    swap |= {
        "--rtsp-udp-ports": "off",
        "--ladder-file": str(tmp / "ladder.yaml"),
        "--kafka-prefix": f"{prefix}.",
    }
    for i, arg in enumerate(out[:-1]):
        if arg in PORT_FLAGS:
            ports[int(out[i + 1])] = local = free_port()
            out[i + 1] = str(local)
        elif arg in swap:
            out[i + 1] = swap[arg]
    if "--kafka" in out and "--kafka-prefix" not in out:
        out += ["--kafka-prefix", f"{prefix}."]
    return out, ports


def probe_port(container: dict[str, Any], probe: str, ports: dict[int, int]) -> tuple[str, int]:
    named = {p.get("name"): p["containerPort"] for p in container["ports"]}
    get_ = container[probe]["httpGet"]
    return get_["path"], ports[named[get_["port"]]]


def test_chart_commands_serve_their_probes(tmp_path: Path) -> None:
    kafka, s3 = services.require("kafka"), services.require("s3")
    helm = helm_binary()
    # WHIP exposed, so ingest also starts with the chart's --webrtc-ports and --webrtc-announce-ip.
    whip = {"enabled": True, "firstPort": 31000, "count": 10, "announceIp": "127.0.0.1"}
    # The test Kafka has one broker: the chart's production replication (3) would not fit it.
    docs = render(helm, tmp_path, {"ingest": {"whip": whip}, "kafka": {"replication": 1}})
    (config,) = of_kind(docs, "ConfigMap")
    (tmp_path / "ladder.yaml").write_text(config["data"]["ladder.yaml"])
    prefix = f"t{uuid.uuid4().hex[:10]}"
    env = {**os.environ, "CAMFLOW_SECRET": "probe-test-" + "s" * 40}
    started: list[tuple[str, subprocess.Popen[bytes], dict[str, Any], dict[int, int], Path]] = []
    try:
        for _, container in containers(docs):
            args, ports = local_args([str(a) for a in container["args"]], tmp_path, kafka, s3, prefix)
            err = tmp_path / f"{args[0]}.err"
            with err.open("wb") as fe:
                proc = subprocess.Popen([*CAMFLOW, *args], stdout=subprocess.DEVNULL, stderr=fe, env=env)
            started.append((args[0], proc, container, ports, err))
        for name, proc, container, ports, err in started:
            live_path, live_port = probe_port(container, "livenessProbe", ports)
            ready_path, ready_port = probe_port(container, "readinessProbe", ports)
            deadline = time.monotonic() + 120
            while (status := get(f"http://127.0.0.1:{ready_port}{ready_path}"))[0] != 200:
                assert proc.poll() is None, f"{name} exited {proc.returncode}: {err.read_text()[-2000:]}"
                assert time.monotonic() < deadline, f"{name} {ready_path} never ready: {status}"
                time.sleep(0.25)
            assert get(f"http://127.0.0.1:{live_port}{live_path}")[0] == 200, name
            metrics_port = ports[{p.get("name"): p["containerPort"] for p in container["ports"]}["metrics"]]
            status, text = get(f"http://127.0.0.1:{metrics_port}/metrics")
            assert status == 200 and "camflow_" in text, f"{name} /metrics: {status}"
            if name == "edge":  # the public port keeps its figures to an operator token
                assert get(f"http://127.0.0.1:{ready_port}/metrics")[0] == 401
        for name, proc, _, _, err in started:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, f"{name}: {err.read_text()[-2000:]}"
    finally:
        for _, proc, *_ in started:
            stop_process(proc)
