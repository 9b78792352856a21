"""``camflow``: the command line and the composition root.

The one place of ``camflow/`` that imports services (ingest, transcode, packager, edge), and
only inside the subcommand that starts them; every other module of ``camflow/`` is a contract
the services share (``lint-imports`` checks both, see ``[tool.importlinter]`` in pyproject.toml).

- ``main``: dispatches the subcommands (console script ``camflow``, ``python -m camflow.cli``);
- ``args``: every subcommand's flags, each default written once;
- ``serve``: the services of ``run``, ``ingest``, ``transcode``, ``package`` and ``edge`` on one
  bus and store, until a signal;
- ``banner``: what ``camflow run`` prints for its operator;
- ``tail``: ``camflow tail``, the stream-health feed on a terminal.
"""
