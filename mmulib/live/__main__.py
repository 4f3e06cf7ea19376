"""``python -m mmulib.live``: the same as ``mmulib probe`` (see :mod:`mmulib.live.command`).

Without a script it only checks that a probe could run.  When something the probe needs is
missing it prints one line saying what and how to get it, and exits with status 2.
"""

from __future__ import annotations

import sys

from .command import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
