"""``python -m mmulib doctor``: is this laptop ready for the workshop?

One line per check, then a verdict; exit status 0 when everything the notebooks need is
there, 1 when something is missing.  Each failing line says exactly what to install, with a
command for the way this Python was installed (a virtual environment, conda, or a system
Python), and the verdict falls back to the Binder link, where everything is preinstalled.

The checks use only the standard library: versions come from ``importlib.metadata`` (the
packages are never imported, so a broken ipywidgets cannot crash the doctor), and ``dot`` is
looked up on PATH and run once with ``-V``.  Every probe is a parameter of
:func:`run_checks`, so the tests can describe any laptop.

>>> check = Check("numpy", True, "numpy 2.1.0")
>>> check.line()
'ok       numpy 2.1.0'
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

__all__ = ["BINDER_REPO", "Check", "binder_url", "run_checks", "main"]

BINDER_REPO = "mmulib/mmulib"
"""GitHub owner/repository for Binder links (a placeholder until the project is published)."""


def binder_url(notebook: str = "notebooks/00-start-here.ipynb", *, repo: str = BINDER_REPO,
               ref: str = "HEAD") -> str:
    """The mybinder.org link that opens ``notebook`` in JupyterLab.

    >>> binder_url("notebooks/01-what-is-a-role.ipynb")
    'https://mybinder.org/v2/gh/mmulib/mmulib/HEAD?urlpath=lab/tree/notebooks/01-what-is-a-role.ipynb'
    """
    return f"https://mybinder.org/v2/gh/{repo}/{ref}?urlpath=lab/tree/{notebook}"


@dataclass(frozen=True)
class Check:
    """One thing the notebooks need: whether it is there, what was found, how to fix it."""

    name: str
    ok: bool
    found: str
    fix: str = ""

    def line(self) -> str:
        status = "ok" if self.ok else "MISSING"
        text = f"{status:8} {self.found}"
        return text if self.ok or not self.fix else f"{text} -> {self.fix}"


VersionOf = Callable[[str], "str | None"]
Which = Callable[[str], "str | None"]
Runner = Callable[[Sequence[str]], "tuple[int, str]"]


def _installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _run(cmd: Sequence[str]) -> tuple[int, str]:
    """Exit status and combined output; (127, reason) if the program cannot start."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def _major(version: str) -> int:
    m = re.match(r"(\d+)", version)
    return int(m.group(1)) if m else -1


def _pip(spec: str, python: str) -> str:
    return f"{python} -m pip install '{spec}'"


def _installer(python: str, prefix: str) -> str:
    """How packages get into this Python: ``"conda"``, ``"venv"`` or ``"system"``."""
    if (Path(prefix) / "conda-meta").is_dir():
        return "conda"
    if sys.prefix != sys.base_prefix or os.environ.get("VIRTUAL_ENV"):
        return "venv"
    return "system"


def _package_fix(spec: str, conda_name: str, how: str, python: str) -> str:
    if how == "conda":
        return f"conda install -c conda-forge '{conda_name}'  (or: {_pip(spec, python)})"
    if how == "system":
        return (f"{_pip(spec, python)}  (better: in a virtual environment, "
                f"'{python} -m venv .venv'; or 'make lab' from a clone of mmulib)")
    return _pip(spec, python)


def _dot_fix(how: str, system: str) -> str:
    if how == "conda":
        return "conda install -c conda-forge graphviz  (the dot binary)"
    if system == "Darwin":
        return "brew install graphviz"
    if system == "Windows":
        return "winget install graphviz  (then open a new terminal so dot is on PATH)"
    if Path("/etc/debian_version").exists():
        return "sudo apt-get install graphviz"
    return "install Graphviz from your system's packages (it provides the dot binary)"


def run_checks(
    *,
    python_version: tuple[int, int, int] | None = None,
    version_of: VersionOf = _installed_version,
    which: Which = shutil.which,
    run: Runner = _run,
    python: str | None = None,
    how: str | None = None,
    system: str | None = None,
) -> list[Check]:
    """Check Python, numpy, ipywidgets 8 (+ its JupyterLab side), graphviz + dot, JupyterLab."""
    pv = python_version or tuple(sys.version_info[:3])
    python = python or sys.executable or "python3"
    how = how or _installer(python, sys.prefix)
    system = system or platform.system()
    out = []

    py_ok = pv >= (3, 10)
    out.append(Check("python", py_ok, f"Python {'.'.join(map(str, pv))}"
                     + ("" if py_ok else " (mmulib needs 3.10 or newer)"),
                     "" if py_ok else "install Python 3.10 or newer (python.org, or "
                     "'conda create -n mmulib python=3.12'), then reinstall mmulib with it"))

    numpy = version_of("numpy")
    out.append(Check("numpy", numpy is not None and _major(numpy) >= 1,
                     f"numpy {numpy}" if numpy else "numpy is not installed",
                     "" if numpy else _package_fix("numpy>=1.24", "numpy", how, python)))

    widgets = version_of("ipywidgets")
    w_ok = widgets is not None and _major(widgets) == 8
    if widgets is None:
        found = "ipywidgets is not installed"
    elif not w_ok:
        found = f"ipywidgets {widgets} (the notebooks need ipywidgets 8)"
    else:
        found = f"ipywidgets {widgets}"
    out.append(Check("ipywidgets", w_ok, found,
                     "" if w_ok else _package_fix("ipywidgets>=8,<9", "ipywidgets=8", how,
                                                  python)))

    lab_widgets = version_of("jupyterlab_widgets")
    lw_ok = lab_widgets is not None and _major(lab_widgets) == 3
    out.append(Check(
        "jupyterlab_widgets", lw_ok,
        f"jupyterlab_widgets {lab_widgets}" + ("" if lw_ok else " (ipywidgets 8 needs 3.x)")
        if lab_widgets else "jupyterlab_widgets is not installed (JupyterLab cannot show widgets)",
        "" if lw_ok else _package_fix("jupyterlab_widgets>=3,<4", "jupyterlab_widgets=3", how,
                                      python)
        + "; then restart JupyterLab"))

    lab = version_of("jupyterlab")
    lab_ok = lab is not None and _major(lab) >= 4
    out.append(Check(
        "jupyterlab", lab_ok,
        (f"JupyterLab {lab}" + ("" if lab_ok else " (the notebooks are tested with 4.x)"))
        if lab else "JupyterLab is not installed",
        "" if lab_ok else _package_fix("jupyterlab>=4", "jupyterlab>=4", how, python)))

    gv = version_of("graphviz")
    out.append(Check("graphviz", gv is not None,
                     f"graphviz (Python package) {gv}" if gv else
                     "graphviz (Python package) is not installed",
                     "" if gv else _package_fix("graphviz>=0.20", "python-graphviz", how,
                                                python)))

    out.append(_check_dot(which, run, how, system))
    return out


def _check_dot(which: Which, run: Runner, how: str, system: str) -> Check:
    path = which("dot")
    if path is None:
        return Check("dot", False, "Graphviz's dot binary is not on PATH (pip's graphviz "
                                   "package is only a wrapper around it)", _dot_fix(how, system))
    status, text = run([path, "-V"])
    if status != 0:
        return Check("dot", False, f"{path} -V failed ({status}): {text[:200]}",
                     _dot_fix(how, system))
    version = re.search(r"version\s+(\S+)", text)
    return Check("dot", True, f"dot {version.group(1) if version else '(version unknown)'} "
                              f"at {path}")


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Print the checks and a verdict; 0 if ready, 1 if not."""
    out = out or sys.stdout
    checks = run_checks()
    out.write("mmulib doctor: is this machine ready for the notebooks?\n")
    for check in checks:
        out.write(check.line() + "\n")
    missing = [c.name for c in checks if not c.ok]
    if not missing:
        out.write("verdict: ready. Start with: jupyter lab notebooks/00-start-here.ipynb\n")
        return 0
    out.write(f"verdict: not ready, {len(missing)} to fix ({', '.join(missing)}): install what "
              "the lines above say and run 'python -m mmulib doctor' again, or use Binder, "
              f"where everything is installed: {binder_url()}\n")
    return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
