"""``python -m yr.cli``: the same as the ``yr`` console script."""

import sys

from yr.cli.main import main

sys.exit(main())
