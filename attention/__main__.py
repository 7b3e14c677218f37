"""``python -m attention``: the ``attention`` command, where the package is importable but not installed
(a checkout on a machine with its own PyTorch)."""

from attention.cli import main

raise SystemExit(main())
