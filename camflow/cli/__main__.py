"""``python -m camflow.cli``: the same as the ``camflow`` console script."""

import sys

from camflow.cli.main import main

sys.exit(main())
