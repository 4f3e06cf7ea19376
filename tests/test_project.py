"""Checks on the project itself: import boundaries, notebooks in git, packaging and setup files."""

from __future__ import annotations

import json
import pkgutil
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# Modules that exist to talk to Jupyter or Graphviz.  Every other module of mmulib is "model":
# it must import without IPython, ipywidgets, graphviz or any other Jupyter package, so that the
# CLI, the tests and the batch checks stay light and work where Jupyter is absent.
FRONT_END_MODULES = {"__main__", "draw", "ui", "widgets"}
FORBIDDEN_IN_MODEL = {
    "IPython",
    "ipykernel",
    "ipywidgets",
    "graphviz",
    "traitlets",
    "jupyter_client",
    "jupyter_core",
    "nbformat",
}

# Conda names that differ from the PyPI names in pyproject.toml.
CONDA_TO_PYPI = {"python-graphviz": "graphviz", "matplotlib-base": "matplotlib"}

# What repo2docker's base environment already provides on Binder (its own environment.yml has
# jupyterlab==4.*), and what binder/environment.yml must therefore leave out: pinning it again
# fights the base image and is a known cause of "Error displaying widget".
BINDER_BASE_PROVIDES = {"jupyterlab"}


def model_modules() -> list[str]:
    """mmulib and every submodule present now, except the front-end ones."""
    import mmulib

    names = ["mmulib"]
    for info in pkgutil.iter_modules(mmulib.__path__):
        if info.name not in FRONT_END_MODULES:
            names.append(f"mmulib.{info.name}")
    return names


def test_model_modules_import_nothing_from_jupyter_or_graphviz():
    names = model_modules()  # only modules that exist now: compute, cli, ... may come later
    code = textwrap.dedent(
        f"""
        import importlib, json, sys
        for name in {names!r}:
            importlib.import_module(name)
        forbidden = {sorted(FORBIDDEN_IN_MODEL)!r}
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in forbidden)))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing {names} loaded {loaded}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [
        i
        for i, cell in enumerate(nb["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert dirty == [], f"{path.name}: cells {dirty} carry outputs; clear them before committing"
    assert "widgets" not in nb.get("metadata", {}), f"{path.name}: saved widget state"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_kernel_is_python3(path):
    # Any other kernel name gives "No such kernel" on Binder, in CI and in tests/test_notebooks.py.
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


def _pypi_name(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip()).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def _conda_names(path: Path) -> set[str]:
    """PyPI names of the conda dependencies in an environment file, without python and pip."""
    env = yaml.safe_load(path.read_text())
    names = set()
    for dep in env["dependencies"]:
        assert isinstance(dep, str), f"{path}: unexpected pip section {dep!r}"
        name = re.match(r"[A-Za-z0-9._-]+", dep).group(0)
        if name not in ("python", "pip"):
            names.add(CONDA_TO_PYPI.get(name, name))
    return names


def test_dependency_lists_agree():
    pyproject = {_pypi_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert pyproject == {"numpy", "graphviz", "ipywidgets", "jupyterlab", "matplotlib", "tqdm"}
    assert _conda_names(ROOT / "environment.yml") == pyproject
    binder = _conda_names(ROOT / "binder" / "environment.yml")
    assert not binder & BINDER_BASE_PROVIDES, "let repo2docker's base provide jupyterlab"
    assert binder | BINDER_BASE_PROVIDES == pyproject


def test_binder_environment_is_pinned_and_has_no_local_paths():
    env = yaml.safe_load((ROOT / "binder" / "environment.yml").read_text())
    assert env["channels"][0] == "conda-forge"
    assert "python=3.12" in env["dependencies"]
    text = (ROOT / "binder" / "environment.yml").read_text()
    assert not re.search(r"^\s*-\s*(pip:|-e\b|\.)", text, re.M), "no pip section or local paths"
    assert not (ROOT / ".binder").exists(), "repo2docker refuses both binder/ and .binder/"


def test_binder_postbuild_fails_early_and_installs_mmulib():
    post = ROOT / "binder" / "postBuild"
    lines = [ln.strip() for ln in post.read_text().splitlines()]
    assert lines[0].startswith("#!")
    assert "set -euo pipefail" in lines
    assert "python -m pip install --no-deps --no-cache-dir -e ." in lines
    assert any(ln.startswith("dot -V") for ln in lines)
    assert post.stat().st_mode & 0o111, "postBuild must be executable"


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def test_readme_commands_are_make_targets():
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    commands = re.findall(r"^make ([a-z-]+)\s*$", _readme(), re.M)
    assert {"lab", "test"} <= set(commands)
    assert set(commands) <= targets


def test_readme_binder_badge_opens_an_existing_notebook():
    links = re.findall(r"https://mybinder\.org/v2/gh/[^)\s]+", _readme())
    assert links
    for link in links:
        path = re.search(r"urlpath=lab/tree/([^)&\s]+)", link).group(1)
        assert (ROOT / path).is_file(), link


def test_ci_runs_the_readme_test_command():
    text = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in text
    assert re.search(r"^make test$", text, re.M)


def test_lab_binds_to_localhost_and_opens_an_existing_notebook():
    makefile = (ROOT / "Makefile").read_text()
    assert "--ServerApp.ip=127.0.0.1" in makefile
    path = re.search(r"--LabApp\.default_url=/lab/tree/(\S+)", makefile).group(1)
    assert (ROOT / path).is_file()


def test_console_script_points_at_a_function():
    target = PYPROJECT["project"]["scripts"]["mmulib"]
    assert target == "mmulib.cli:main"
    import mmulib.cli

    assert callable(mmulib.cli.main)
