"""Test switches for the external tools some tests need.

Markers (registered in pyproject.toml):

* ``needs_dot``: renders with Graphviz's ``dot`` binary.  The PyPI ``graphviz`` package is
  only a wrapper that runs ``dot``, so "import graphviz works" says nothing; the test is
  skipped only when ``dot`` itself is not on PATH or ``dot -V`` fails, and the skip reason
  says which and how to install it.  ``--skip-dot`` skips these tests even when ``dot`` is
  there, to show that everything else works without it (xflr6/graphviz's ``--skip-exe``).
* ``browser``: drives Debian's Chromium; skipped when ``/usr/bin/chromium`` is missing.
* ``kvm``: needs a usable ``/dev/kvm``; skipped when there is none.

With ``MMULIB_REQUIRE_TOOLS=1`` (set by ``.ci/run``, whose ``make test`` installs ``dot``
and Chromium) a missing ``dot`` or Chromium fails the tests that need it instead of
skipping them, so a broken install step cannot hide behind a green run.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--skip-dot",
        action="store_true",
        help="skip tests marked needs_dot even if Graphviz's dot is installed",
    )


@functools.cache
def dot_problem() -> str | None:
    """Why Graphviz's ``dot`` cannot be used, or None if ``dot -V`` works."""
    path = shutil.which("dot")
    if path is None:
        return "Graphviz's dot is not on PATH (Debian: apt-get install graphviz)"
    try:
        proc = subprocess.run([path, "-V"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{path} -V could not run: {exc}"
    if proc.returncode != 0:
        return f"{path} -V exited {proc.returncode}: {proc.stderr.strip()}"
    return None


@functools.cache
def chromium_problem() -> str | None:
    """Why Debian's Chromium cannot be used, or None if it is there."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (Debian: apt-get install chromium chromium-driver)"
    return None


@functools.cache
def kvm_problem() -> str | None:
    """Why /dev/kvm cannot be used, or None."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist (no KVM on this machine)"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not readable and writable by this user"
    return None


def _require_tools() -> bool:
    return os.environ.get("MMULIB_REQUIRE_TOOLS", "") not in ("", "0")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("needs_dot"):
        if item.config.getoption("--skip-dot"):
            pytest.skip("--skip-dot given")
        _need(dot_problem(), required=_require_tools())
    if item.get_closest_marker("browser"):
        _need(chromium_problem(), required=_require_tools())
    if item.get_closest_marker("kvm"):
        _need(kvm_problem(), required=False)


def _need(problem: str | None, required: bool) -> None:
    if problem is None:
        return
    if required:
        pytest.fail(f"{problem}; MMULIB_REQUIRE_TOOLS is set, so this is an error", pytrace=False)
    pytest.skip(problem)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"dot: {dot_problem() or 'ok'}",
        f"chromium: {chromium_problem() or CHROMIUM}",
        f"MMULIB_REQUIRE_TOOLS: {'yes' if _require_tools() else 'no'}",
    ]


# --- fixtures shared by several test modules ----------------------------------------------------


@pytest.fixture
def this_python_kernel(tmp_path, monkeypatch) -> str:
    """A ``python3`` kernel spec that runs ``sys.executable``, first on JUPYTER_PATH.

    Notebook tests use it so the kernel is this interpreter (the .venv's python under
    ``make test``), not whatever ``python3`` spec elsewhere on the machine points to.
    """
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (ipykernel)", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # silence jupyter_core's migration warning
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # debugpy's frozen-modules note
    return "python3"


def load_docs_builder():
    """scripts/build_docs.py as a module (scripts/ is not a package)."""
    if "build_docs" not in sys.modules:
        root = Path(__file__).resolve().parent.parent
        spec = importlib.util.spec_from_file_location("build_docs",
                                                      root / "scripts" / "build_docs.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["build_docs"] = module  # dataclasses look their module up while defining
        spec.loader.exec_module(module)
    return sys.modules["build_docs"]


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> Path:
    """The static docs site, built once per session for tests/test_docs.py and the browser test."""
    out = tmp_path_factory.mktemp("site")
    load_docs_builder().build(out, widget_js="local", log=lambda _: None)
    return out
