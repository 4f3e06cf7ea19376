"""The one place that runs Graphviz: DOT text in, SVG text out.

Drawing modules build DOT *text* (pure, deterministic, testable without
Graphviz); :func:`render_svg` turns it into SVG with the ``dot`` binary.  When
``dot`` is missing it raises :class:`DotNotFoundError`, whose message says how
to install it; views catch it and show the DOT text instead.

This module imports the ``graphviz`` package lazily, so importing it costs
nothing and the model packages stay free of it.
"""

from __future__ import annotations

import functools
import shutil
import subprocess

__all__ = ["DotNotFoundError", "DotError", "render_svg", "dot_available", "INSTALL_HINT"]

INSTALL_HINT = (
    "install Graphviz's dot binary: 'apt-get install graphviz' (Debian/Ubuntu), "
    "'conda install -c conda-forge python-graphviz', 'brew install graphviz', "
    "or open the notebooks on Binder, where it is installed"
)


class DotNotFoundError(RuntimeError):
    """The Graphviz ``dot`` binary is not on PATH."""


class DotError(RuntimeError):
    """``dot`` ran but rejected the DOT text; the message carries its stderr."""


def dot_available() -> bool:
    return shutil.which("dot") is not None


@functools.lru_cache(maxsize=512)
def render_svg(dot_source: str, engine: str = "dot") -> str:
    """Render DOT text to an SVG string (cached: the same text is rendered once).

    Raises:
        DotNotFoundError: ``dot`` is not installed (the message says how to get it).
        DotError: Graphviz rejected the input.
    """
    exe = shutil.which(engine)
    if exe is None:
        raise DotNotFoundError(f"Graphviz '{engine}' not found on PATH; {INSTALL_HINT}")
    proc = subprocess.run([exe, "-Tsvg"], input=dot_source.encode("utf-8"),
                          capture_output=True, check=False)
    if proc.returncode != 0:
        raise DotError(f"{engine} -Tsvg failed: {proc.stderr.decode('utf-8', 'replace').strip()}")
    return proc.stdout.decode("utf-8")
