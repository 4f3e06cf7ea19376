"""``python -m mmulib``: see :mod:`mmulib.cli`."""

from .cli import main

raise SystemExit(main())
