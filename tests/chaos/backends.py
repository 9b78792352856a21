"""Kafka and MinIO for the chaos suite, started, stopped, frozen and resumed through the project's
own scripts (scripts/kafka.sh and scripts/minio.sh act by PID), in a run directory of their own."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT_TIMEOUT = 300.0


def run_script(env: dict[str, str], name: str, *args: str) -> None:
    """scripts/NAME.sh ARGS (kafka.sh or minio.sh) with ``env``: its ports and run directory."""
    subprocess.run(
        ["bash", str(ROOT / "scripts" / f"{name}.sh"), *args],
        env=env,
        check=True,
        timeout=SCRIPT_TIMEOUT,
        stdout=subprocess.DEVNULL,
    )


def start_both(run_dir: Path, script: Callable[..., None]) -> None:
    """Kafka, then MinIO, through ``script`` (NAME, ARGS...); Kafka is stopped again if MinIO fails."""
    run_dir.mkdir(parents=True, exist_ok=True)
    script("kafka", "start")
    try:
        script("minio", "start")
    except BaseException:
        script("kafka", "stop")
        raise


@dataclass(frozen=True)
class Backends:
    """One Kafka (``brokers`` nodes) and one MinIO (``drives`` drives) on 127.0.0.1."""

    run_dir: Path
    kafka_port: int = 29092
    controller_port: int = 29093
    minio_port: int = 29000
    brokers: int = 1
    drives: int = 1
    user: str = "camflow"
    password: str = "camflow-secret"
    bucket: str = "camflow-chaos"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CAMFLOW_RUN": str(self.run_dir),
            "KAFKA_PORT": str(self.kafka_port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "KAFKA_BROKERS": str(self.brokers),
            "MINIO_PORT": str(self.minio_port),
            "MINIO_DRIVES": str(self.drives),
            "MINIO_ROOT_USER": self.user,
            "MINIO_ROOT_PASSWORD": self.password,
        }

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.kafka_port + 2 * i}" for i in range(self.brokers))

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.minio_port}/{self.bucket}"

    @property
    def client_env(self) -> dict[str, str]:
        """What a camflow process needs to reach the store."""
        return {"AWS_ACCESS_KEY_ID": self.user, "AWS_SECRET_ACCESS_KEY": self.password}

    def kafka(self, *args: str) -> None:
        self.script("kafka", *args)

    def minio(self, *args: str) -> None:
        self.script("minio", *args)

    def start(self) -> None:
        start_both(self.run_dir, self.script)

    def stop(self) -> None:
        """Both, whatever state a scenario left them in (a frozen broker is thawed first)."""
        errors: list[BaseException] = []
        for step in (("kafka", "thaw"), ("minio", "stop"), ("kafka", "stop")):
            try:
                self.script(*step)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                if step[1] != "thaw":  # thaw fails when a node is down: nothing to thaw
                    errors.append(exc)
        if errors:
            raise errors[0]

    def script(self, name: str, *args: str) -> None:
        """scripts/NAME.sh ARGS with this run's environment (ports, run directory, brokers, drives)."""
        run_script(self.env, name, *args)
