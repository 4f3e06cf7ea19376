"""``mmulib probe`` (and ``python -m mmulib.live``) on a host without KVM: one line, exit 2.

The missing ``/dev/kvm`` is simulated with the hidden ``--device`` option, so these tests run
the same everywhere.  Invalid scripts are refused before anything touches KVM.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmulib.live import errors
from mmulib.live.command import main

NO_KVM = ("mmulib probe: /nonexistent/kvm does not exist: this machine has no KVM (modprobe "
          "kvm_intel or kvm_amd on a host with virtualization enabled)\n")


@pytest.fixture
def no_container(monkeypatch):
    monkeypatch.setattr(errors, "in_container", lambda: False)


@pytest.mark.parametrize("argv", [["--builtin", "cr0-wp"], ["--builtin", "all", "--json"], []])
def test_no_kvm_is_one_line_and_exit_2(argv, no_container, capsys):
    assert main([*argv, "--device", "/nonexistent/kvm"]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", NO_KVM)


def test_a_script_file_without_kvm(tmp_path, no_container, capsys):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"sregs": {"cr0": "0x11"}, "ops": [{"op": "run"}]}))
    assert main([str(path), "--device", "/nonexistent/kvm"]) == 2
    assert capsys.readouterr().err == NO_KVM


@pytest.mark.parametrize(("argv", "message"), [
    (["--builtin", "nope"], "mmulib probe: invalid script: no built-in probe script 'nope' "
                            "(one of: real-mode, "),
    (["missing.json"], "mmulib probe: invalid script: cannot read 'missing.json'"),
    (["--builtin", "smm", "x.json"], "mmulib probe: invalid script: give a script or "
                                     "--builtin, not both"),
])
def test_invalid_requests_exit_2_before_touching_kvm(argv, message, capsys):
    assert main([*argv, "--device", "/nonexistent/kvm"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(message) and err.count("\n") == 1


def test_an_invalid_op_is_refused_before_touching_kvm(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"ops": [{"op": "run"}, {"op": "jump"}]}))
    assert main([str(path), "--device", "/nonexistent/kvm"]) == 2
    assert capsys.readouterr().err.startswith("mmulib probe: invalid script: op 1: ")


def test_several_vcpus_are_refused(tmp_path, capsys):
    path = tmp_path / "two.json"
    path.write_text(json.dumps({"vcpus": 2, "ops": [{"op": "run", "vcpu": 1}]}))
    assert main([str(path), "--device", "/nonexistent/kvm"]) == 2
    assert capsys.readouterr().err == ("mmulib probe: invalid script: the probe runs one vCPU: "
                                       "drop 'vcpus' and the ops' 'vcpu'\n")


def test_list_needs_no_kvm(capsys):
    assert main(["--list", "--device", "/nonexistent/kvm"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("real-mode ") and any(x.startswith("smm ") for x in lines)


def test_python_m_mmulib_live_in_a_fresh_interpreter(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mmulib.live", "--builtin", "boot", "--device",
                           str(tmp_path / "kvm")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == "" and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"mmulib probe: {tmp_path / 'kvm'} does not exist")


def test_mmulib_probe_subcommand(no_container, capsys):
    from mmulib import cli

    assert cli.main(["probe", "--builtin", "smm", "--device", "/nonexistent/kvm"]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", NO_KVM)
