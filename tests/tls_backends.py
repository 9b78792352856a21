"""Test certificates (scripts/lib.sh's tls_ca / tls_leaf, openssl), and a Kafka with TLS listeners
and a MinIO over HTTPS of a test's own: scripts/kafka.sh with KAFKA_TLS=1 and scripts/minio.sh with
MINIO_TLS=1, on ports of their own, stopped by PID through the scripts.

This module holds no tests.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.chaos.backends import ROOT, run_script, start_both


def make_certificates(directory: Path, *leaves: str) -> Path:
    """A test CA in ``directory`` (ca.crt, ca.key) and, for each name in ``leaves``, NAME.crt and
    NAME.key signed by it (for 127.0.0.1 and localhost); returns ``directory``."""
    script = f'set -euo pipefail; . "{ROOT}/scripts/lib.sh"; tls_ca test "$1"'
    for name in leaves:
        script += f'; tls_leaf test "$1" {name} {name}'
    subprocess.run(["bash", "-c", script, "certs", str(directory)], check=True, timeout=60)
    return directory


@dataclass(frozen=True)
class TlsBackends:
    """Kafka (PLAINTEXT on ``kafka_port``, its controller +1, SSL with client certificates +2,
    SASL_SSL with SCRAM +3) and MinIO over HTTPS on ``minio_port`` (console +1)."""

    run_dir: Path
    kafka_port: int
    minio_port: int
    sasl_user: str = "camflow"
    sasl_password: str = "scram-secret-4711"
    s3_user: str = "camflow"
    s3_password: str = "camflow-secret"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CAMFLOW_RUN": str(self.run_dir),
            "KAFKA_PORT": str(self.kafka_port),
            "KAFKA_CONTROLLER_PORT": str(self.kafka_port + 1),
            "KAFKA_BROKERS": "1",
            "KAFKA_TLS": "1",
            "KAFKA_TLS_PORT": str(self.kafka_port + 2),
            "KAFKA_SASL_USER": self.sasl_user,
            "KAFKA_SASL_PASSWORD": self.sasl_password,
            "MINIO_PORT": str(self.minio_port),
            "MINIO_DRIVES": "1",
            "MINIO_TLS": "1",
            "MINIO_ROOT_USER": self.s3_user,
            "MINIO_ROOT_PASSWORD": self.s3_password,
        }

    @property
    def kafka_tls_dir(self) -> Path:
        return self.run_dir / "kafka" / "tls"

    @property
    def ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port + 2}"

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port + 3}"

    @property
    def s3_ca(self) -> Path:
        return self.run_dir / "minio" / "tls" / "ca.crt"

    def s3_url(self, bucket: str, host: str = "localhost") -> str:
        return f"https://{host}:{self.minio_port}/{bucket}"

    def sasl_env(self, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
        """What a camflow process needs to use the SASL_SSL listener (the password by its file)."""
        return {
            "CAMFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "CAMFLOW_KAFKA_CA_FILE": str(self.kafka_tls_dir / "ca.crt"),
            "CAMFLOW_KAFKA_SASL_MECHANISM": mechanism,
            "CAMFLOW_KAFKA_USERNAME": self.sasl_user,
            "CAMFLOW_KAFKA_PASSWORD_FILE": str(self.kafka_tls_dir / "sasl-password"),
        }

    def ssl_env(self) -> dict[str, str]:
        """What a camflow process needs to use the SSL listener (mutual TLS)."""
        return {
            "CAMFLOW_KAFKA_SECURITY_PROTOCOL": "SSL",
            "CAMFLOW_KAFKA_CA_FILE": str(self.kafka_tls_dir / "ca.crt"),
            "CAMFLOW_KAFKA_CERT_FILE": str(self.kafka_tls_dir / "client.crt"),
            "CAMFLOW_KAFKA_KEY_FILE": str(self.kafka_tls_dir / "client.key"),
        }

    def s3_env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.s3_user,
            "AWS_SECRET_ACCESS_KEY": self.s3_password,
            "CAMFLOW_S3_CA_FILE": str(self.s3_ca),
        }

    def script(self, name: str, *args: str) -> None:
        run_script(self.env, name, *args)

    def start(self) -> None:
        start_both(self.run_dir, self.script)

    def stop(self) -> None:
        try:
            self.script("minio", "stop")
        finally:
            self.script("kafka", "stop")
