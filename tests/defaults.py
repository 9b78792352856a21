"""The services' settings as the command line gives them by default, for tests that build a service
directly. The defaults are written once, in ``camflow.cli.args``; the services' constructors take
them as required keywords, and these helpers take them from a parsed command line, with a test's
own values over them. This module holds no tests.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from camflow.cli.args import SEGMENT_SECONDS, build_parser
from camflow.cli.settings import (
    connection_limits,
    edge_app_settings,
    edge_settings,
    packager_settings,
    rtsp_server_settings,
    transcoder_settings,
)
from camflow.limits import ConnectionLimits

SEGMENT_TARGET = SEGMENT_SECONDS  # --segment-duration's default, for a Publisher or health built directly


def parsed(command: str, *flags: str) -> argparse.Namespace:
    """``camflow COMMAND FLAGS...`` as parsed (``--kafka`` given where the command needs a bus)."""
    return build_parser().parse_args([command, *flags])


def transcoder(**overrides: Any) -> dict[str, Any]:
    """``TranscodeWorker``'s keywords of ``camflow transcode``, with ``overrides`` over them."""
    return {**transcoder_settings(parsed("transcode")), **overrides}


def packager(**overrides: Any) -> dict[str, Any]:
    """``Packager``'s keywords of ``camflow package``, with ``overrides`` over them."""
    return {**packager_settings(parsed("package")), **overrides}


def edge_app(**overrides: Any) -> dict[str, Any]:
    """``edge.app.build_app``'s keywords of ``camflow edge``, with ``overrides`` over them."""
    return {**edge_app_settings(parsed("edge")), **overrides}


def edge(**overrides: Any) -> dict[str, Any]:
    """``EdgeServer``'s (and ``run_edge``'s) keywords of ``camflow edge``, with ``overrides`` over them."""
    return {**edge_settings(parsed("edge")), **overrides}


def rtsp_server(**overrides: Any) -> dict[str, Any]:
    """``build_rtsp_server``'s keywords of ``camflow ingest`` (host and port excepted), with
    ``overrides`` over them."""
    return {**rtsp_server_settings(parsed("ingest", "--kafka", "127.0.0.1:9")), **overrides}


def limits(**overrides: Any) -> ConnectionLimits:
    """The listeners' ``ConnectionLimits`` of ``camflow edge``, with ``overrides`` over them."""
    return dataclasses.replace(connection_limits(parsed("edge")), **overrides)
