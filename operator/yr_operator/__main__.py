"""`python -m yr_operator`, the same as the `yr-operator` console script."""

from .cli import main

raise SystemExit(main())
