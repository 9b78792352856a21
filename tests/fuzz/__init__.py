"""Fuzzing every parser of camflow with atheris (coverage-guided libFuzzer): ``make fuzz``.

``harness`` says what a target is; ``*_targets`` hold the targets (RTSP, RTP and codecs, the shared
contracts, the edge); ``worker`` runs one under libFuzzer in its own process; ``python -m tests.fuzz``
runs them all and prints a table. How to add a target or reproduce a finding: docs/development.md.
"""
