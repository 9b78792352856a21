"""Logs for people on a terminal, JSON for everything else, and the flag and env that force either."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

import pytest

from camflow.cli.args import build_parser
from camflow.cli.main import main
from camflow.errors import ConfigError
from camflow.log import renders_for_people

LOG_ONE = (
    "import sys; from camflow.log import configure_logging, get_logger; "
    "configure_logging('info', sys.argv[1]); get_logger('test', stream_id='cam1').info('hello_people', n=3)"
)


def _stderr_on_a_tty(log_format: str, env: dict[str, str] | None = None) -> str:
    """What a process that logs one event writes to stderr when stderr is a terminal (a pty)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", LOG_ONE, log_format],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=slave,
            env={**os.environ, **(env or {})},
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=30) == 0
    finally:
        os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


def _stderr_on_a_pipe(log_format: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", LOG_ONE, log_format], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stderr


def test_on_a_terminal_logs_are_for_people() -> None:
    text = _stderr_on_a_tty("auto")
    assert "hello_people" in text and "cam1" in text
    with pytest.raises(ValueError):
        json.loads(text.strip())
    assert "\x1b[" in text  # coloured, since the terminal can show it
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert "[info" in plain and "stream_id=cam1" in plain  # the console renderer's columns


def test_on_a_pipe_logs_are_json_lines() -> None:
    (line,) = _stderr_on_a_pipe("auto").splitlines()
    event = json.loads(line)
    assert event["event"] == "hello_people" and event["stream_id"] == "cam1" and event["level"] == "info"
    assert event["component"] == "test" and event["n"] == 3 and event["timestamp"].endswith("Z")


def test_the_format_can_be_forced_either_way() -> None:
    (line,) = _stderr_on_a_tty("json").strip().splitlines()
    assert json.loads(line)["event"] == "hello_people"
    text = _stderr_on_a_pipe("console")
    assert "hello_people" in text and not text.lstrip().startswith("{")


def test_log_format_flag_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAMFLOW_LOG_FORMAT", raising=False)
    assert build_parser().parse_args(["edge"]).log_format == "auto"
    assert build_parser().parse_args(["package", "--log-format", "json"]).log_format == "json"
    monkeypatch.setenv("CAMFLOW_LOG_FORMAT", "console")
    assert build_parser().parse_args(["transcode"]).log_format == "console"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["edge", "--log-format", "xml"])


def test_an_unknown_format_from_the_env_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CAMFLOW_LOG_FORMAT", "xml")
    assert main(["package", "--kafka", "127.0.0.1:1"]) == 2
    assert "log format 'xml'" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        renders_for_people("yaml", sys.stderr)


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_auto_follows_the_stream() -> None:
    assert renders_for_people("auto", _Stream(True))  # type: ignore[arg-type]
    assert not renders_for_people("auto", _Stream(False))  # type: ignore[arg-type]
    assert renders_for_people("console", _Stream(False))  # type: ignore[arg-type]
    assert not renders_for_people("json", _Stream(True))  # type: ignore[arg-type]
