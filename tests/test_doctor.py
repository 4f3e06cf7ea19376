"""mmulib.doctor: one line per check, an exact fix for each problem, exit 0 only when ready."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from mmulib import doctor
from mmulib.doctor import Check, binder_url, run_checks

GOOD = {
    "numpy": "2.1.0",
    "ipywidgets": "8.1.5",
    "jupyterlab_widgets": "3.0.13",
    "jupyterlab": "4.2.5",
    "graphviz": "0.20.3",
}


def laptop(versions=None, dot="/usr/bin/dot", dot_run=(0, "dot - graphviz version 2.43.0 (0)"),
           python_version=(3, 12, 1), how="venv", system="Linux"):
    """run_checks on a described laptop, without looking at this machine."""
    versions = GOOD if versions is None else versions
    return run_checks(
        python_version=python_version,
        version_of=versions.get,
        which=lambda name: dot if name == "dot" else None,
        run=lambda cmd: dot_run,
        python="/home/me/.venv/bin/python",
        how=how,
        system=system,
    )


def by_name(checks):
    return {c.name: c for c in checks}


def test_a_ready_laptop_passes_every_check():
    checks = laptop()
    assert [c.name for c in checks] == ["python", "numpy", "ipywidgets", "jupyterlab_widgets",
                                        "jupyterlab", "graphviz", "dot"]
    assert all(c.ok for c in checks)
    assert by_name(checks)["dot"].found == "dot 2.43.0 at /usr/bin/dot"


def test_old_python_is_reported_with_the_version_needed():
    c = by_name(laptop(python_version=(3, 9, 18)))["python"]
    assert not c.ok
    assert "3.9.18" in c.found and "3.10" in c.found


def test_missing_dot_says_how_to_install_it_for_each_system():
    assert by_name(laptop(dot=None, system="Darwin"))["dot"].fix == "brew install graphviz"
    assert "winget install graphviz" in by_name(laptop(dot=None, system="Windows"))["dot"].fix
    conda = by_name(laptop(dot=None, how="conda"))["dot"]
    assert not conda.ok and conda.fix.startswith("conda install -c conda-forge graphviz")
    assert "wrapper" in conda.found  # the usual confusion: pip's graphviz has no dot


def test_a_dot_that_fails_to_run_is_not_ok():
    c = by_name(laptop(dot_run=(127, "error while loading shared libraries")))["dot"]
    assert not c.ok and "shared libraries" in c.found


def test_ipywidgets_7_is_rejected_with_a_pip_command_for_this_python():
    checks = by_name(laptop({**GOOD, "ipywidgets": "7.7.1"}))
    c = checks["ipywidgets"]
    assert not c.ok
    assert "7.7.1" in c.found and "ipywidgets 8" in c.found
    assert c.fix == "/home/me/.venv/bin/python -m pip install 'ipywidgets>=8,<9'"


def test_conda_users_get_conda_commands():
    c = by_name(laptop({k: v for k, v in GOOD.items() if k != "numpy"}, how="conda"))["numpy"]
    assert c.fix.startswith("conda install -c conda-forge 'numpy'")


def test_missing_jupyterlab_and_widget_frontend_are_reported():
    checks = by_name(laptop({"numpy": "2.0", "ipywidgets": "8.1.0", "graphviz": "0.20"}))
    assert not checks["jupyterlab"].ok and "pip install 'jupyterlab>=4'" in checks["jupyterlab"].fix
    assert not checks["jupyterlab_widgets"].ok
    assert "restart JupyterLab" in checks["jupyterlab_widgets"].fix


def test_each_check_prints_on_one_line():
    for c in laptop({}, dot=None, python_version=(3, 8, 0)):
        assert "\n" not in c.line()
        assert c.line().startswith("MISSING ") and " -> " in c.line()


def test_main_exits_1_and_offers_binder_when_something_is_missing(monkeypatch):
    monkeypatch.setattr(doctor, "run_checks", lambda: [Check("dot", False, "no dot", "apt")])
    out = io.StringIO()
    assert doctor.main(out=out) == 1
    lines = out.getvalue().splitlines()
    assert lines[1] == "MISSING  no dot -> apt"
    assert lines[-1].startswith("verdict: not ready") and binder_url() in lines[-1]


def test_main_exits_0_when_ready(monkeypatch):
    monkeypatch.setattr(doctor, "run_checks", lambda: [Check("dot", True, "dot 2.43.0")])
    out = io.StringIO()
    assert doctor.main(out=out) == 0
    assert out.getvalue().splitlines()[-1].startswith("verdict: ready")


def test_binder_link_opens_lab_on_the_notebook():
    url = binder_url("notebooks/02-cpu-role-vs-root-role.ipynb", ref="v0.1")
    assert url == ("https://mybinder.org/v2/gh/mmulib/mmulib/v0.1"
                   "?urlpath=lab/tree/notebooks/02-cpu-role-vs-root-role.ipynb")


def test_doctor_runs_on_this_machine_as_a_module():
    proc = subprocess.run([sys.executable, "-m", "mmulib.doctor"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode in (0, 1), proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 + 7 + 1  # header, one line per check, verdict
    assert lines[-1].startswith("verdict: ")


@pytest.mark.parametrize("how", ["venv", "conda", "system"])
def test_every_failing_check_has_a_fix(how):
    for c in laptop({}, dot=None, python_version=(3, 8, 0), how=how):
        assert not c.ok and c.fix
