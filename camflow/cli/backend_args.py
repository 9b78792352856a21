"""The backend flags every service and operator command shares: Kafka, the store, the data directory;
and the region flags of the services that write or serve per-stream objects (run, package, edge)."""

from __future__ import annotations

import argparse
import os

from camflow.cli.argtypes import at_least_one
from camflow.keys import check_region


def data_dir() -> str:
    return os.environ.get("CAMFLOW_DATA_DIR", "./data")


def kafka_prefix() -> str:
    return os.environ.get("CAMFLOW_KAFKA_PREFIX", "")


def add_backends(p: argparse.ArgumentParser, *, store: bool = True) -> None:
    p.add_argument(
        "--kafka",
        metavar="HOST:PORT",
        help="Kafka bootstrap server (default: in-process bus); TLS and SASL from the CAMFLOW_KAFKA_* "
        "environment (docs/security.md)",
    )
    p.add_argument(
        "--kafka-prefix",
        default=kafka_prefix(),
        help="prefix of every Kafka topic and consumer group, to share a cluster (default none)",
    )
    p.add_argument(
        "--kafka-replication",
        type=at_least_one("brokers"),
        default=os.environ.get("CAMFLOW_KAFKA_REPLICATION", "1"),
        metavar="N",
        help="brokers holding each partition of the Kafka topics a service creates; topics that exist "
        "keep theirs (default 1; env CAMFLOW_KAFKA_REPLICATION)",
    )
    if store:
        p.add_argument(
            "--s3",
            metavar="URL",
            help="S3 store as http(s)://HOST:PORT/BUCKET[/PREFIX]; credentials from AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY, an https CA bundle from CAMFLOW_S3_CA_FILE or AWS_CA_BUNDLE "
            "(default: files under --data-dir)",
        )
    p.add_argument(
        "--data-dir",
        default=data_dir(),
        help="local store and token secret (default ./data)",
    )


def add_region(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--region",
        type=check_region,
        default=os.environ.get("CAMFLOW_REGION") or None,
        help="the region this process is in, with its own Kafka and a store replicated to the other "
        "regions' (DESIGN.md#multi-region): the packager claims the streams it owns in the stream "
        "directory and writes the region's heartbeat, the edge redirects live playlists of a stream "
        "live in another region there (default: one region; env CAMFLOW_REGION)",
    )
    p.add_argument(
        "--region-edge-url",
        metavar="URL",
        default=os.environ.get("CAMFLOW_REGION_EDGE_URL") or None,
        help="the base URL of this region's edge, where other regions send viewers of its streams "
        "(default: this process's --http-port, as --whep-public-url; env CAMFLOW_REGION_EDGE_URL)",
    )
