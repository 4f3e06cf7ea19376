"""The one place that runs Graphviz: DOT text in, SVG text out.

Drawing modules build DOT *text* (pure, deterministic, testable without
Graphviz); :func:`render_svg` turns it into SVG with the ``dot`` binary.  When
``dot`` is missing it raises :class:`DotNotFoundError`, whose message says how
to install it; views catch it and show the DOT text instead.

Starting ``dot`` costs more than laying out a small graph (about 13 ms of a
15 ms run on the development machines), so on POSIX systems one ``dot -Tsvg``
process is kept running and fed one graph at a time: each graph is followed by
an empty sentinel graph, and its SVG is everything ``dot`` writes before the
sentinel's.  If that process dies (Graphviz rejects a graph: it exits), stops
answering, or cannot be used, the graph is rendered by a one-shot ``dot`` run
as before, so the results and errors are the same either way.

This module imports the ``graphviz`` package lazily, so importing it costs
nothing and the model packages stay free of it.
"""

from __future__ import annotations

import atexit
import functools
import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable

__all__ = ["DotNotFoundError", "DotError", "render_svg", "render_svgs", "dot_available",
           "INSTALL_HINT"]

INSTALL_HINT = (
    "install Graphviz's dot binary: 'apt-get install graphviz' (Debian/Ubuntu), "
    "'conda install -c conda-forge python-graphviz', 'brew install graphviz', "
    "or open the notebooks on Binder, where it is installed"
)
WORKER_TIMEOUT = 20.0  # seconds for one graph before the worker is given up


class DotNotFoundError(RuntimeError):
    """The Graphviz ``dot`` binary is not on PATH."""


class DotError(RuntimeError):
    """``dot`` ran but rejected the DOT text; the message carries its stderr."""


def dot_available() -> bool:
    return shutil.which("dot") is not None


class _Worker:
    """A long-running ``<engine> -Tsvg``: graphs in on stdin, SVG documents out on stdout."""

    def __init__(self, exe: str) -> None:
        self.exe = exe
        self.proc = subprocess.Popen([exe, "-Tsvg"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.count = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()

    def render(self, source: str) -> str | None:
        """The SVG of ``source``, or None if the worker failed (it is then closed)."""
        self.count += 1
        end = f"mmulib_sentinel_{self.count}"
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(source.encode("utf-8") + f"\ndigraph {end} {{}}\n".encode())
            self.proc.stdin.flush()
        except OSError:
            return None
        marker = f"<title>{end}</title>".encode()
        fd, buf = self.proc.stdout.fileno(), bytearray()
        deadline = time.monotonic() + WORKER_TIMEOUT
        while True:
            at = buf.find(marker)
            if at >= 0 and buf.find(b"</svg>", at) >= 0:
                break
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:  # dot exited: it rejected the graph
                return None
            buf += chunk
        self._drain_stderr()
        text = buf.decode("utf-8")
        start = text.rfind("<?xml", 0, text.find(f"<title>{end}</title>"))
        return text[:start] if start > 0 else None

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while select.select([fd], [], [], 0)[0]:
            if not os.read(fd, 1 << 16):
                break


_workers: dict[str, _Worker] = {}
_lock = threading.Lock()


@atexit.register
def _close_workers() -> None:
    for w in _workers.values():
        w.close()
    _workers.clear()


def _one_shot(exe: str, engine: str, dot_source: str) -> str:
    proc = subprocess.run([exe, "-Tsvg"], input=dot_source.encode("utf-8"),
                          capture_output=True, check=False)
    if proc.returncode != 0:
        raise DotError(f"{engine} -Tsvg failed: {proc.stderr.decode('utf-8', 'replace').strip()}")
    return proc.stdout.decode("utf-8")


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
    if os.name == "posix":
        with _lock:
            w = _workers.get(exe)
            if w is None or not w.alive():
                w = _workers[exe] = _Worker(exe)
            svg = w.render(dot_source)
            if svg is None:
                w.close()
                del _workers[exe]
        if svg is not None:
            return svg
    return _one_shot(exe, engine, dot_source)


def render_svgs(sources: Iterable[str], engine: str = "dot") -> list[str]:
    """:func:`render_svg` for several graphs (one process start at most for all of them)."""
    return [render_svg(s, engine) for s in sources]
