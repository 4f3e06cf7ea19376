"""Clear refusals: each missing resource gives one line saying what and how, and exit 2.

Nothing here needs KVM or tracefs: the missing resources are simulated with monkeypatched
paths, a fake /sys/module and a fake tracefs tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmulib.live import LiveUnavailable, errors, host, kvmapi, tracing
from mmulib.live.__main__ import main
from mmulib.live.host import guest_features, host_backend
from mmulib.live.kvmapi import CpuidEntry, Kvm
from mmulib.live.ringbuf import SAMPLE_FORMAT
from mmulib.live.tracing import TraceSession


@pytest.fixture
def no_container(monkeypatch):
    monkeypatch.setattr(errors, "in_container", lambda: False)


def test_missing_dev_kvm_says_what_and_how(no_container):
    with pytest.raises(LiveUnavailable) as info:
        Kvm("/nonexistent/kvm")
    assert str(info.value) == (
        "/nonexistent/kvm does not exist: this machine has no KVM (modprobe kvm_intel or "
        "kvm_amd on a host with virtualization enabled)")


def test_missing_dev_kvm_in_a_container_says_how_to_pass_it(monkeypatch):
    monkeypatch.setattr(errors, "in_container", lambda: True)
    with pytest.raises(LiveUnavailable, match=r"\(inside a container: start it with "
                                              r"--device /nonexistent/kvm\)$"):
        Kvm("/nonexistent/kvm")


def test_no_permission_on_dev_kvm(monkeypatch):
    def denied(path, flags):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(kvmapi.os, "open", denied)
    with pytest.raises(LiveUnavailable) as info:
        Kvm("/dev/kvm")
    assert str(info.value) == ("no permission to open /dev/kvm: add yourself to its group "
                               "(sudo usermod -aG kvm $USER, then log in again) or run as root")


def test_command_line_prints_one_line_and_exits_2(no_container, capsys):
    assert main(["--device", "/nonexistent/kvm"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("mmulib probe: /nonexistent/kvm does not exist: this machine has no KVM "
                   "(modprobe kvm_intel or kvm_amd on a host with virtualization enabled)\n")


def test_module_entry_point_exits_2_in_a_fresh_interpreter(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mmulib.live", "--device",
                           str(tmp_path / "kvm")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == "" and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"mmulib probe: {tmp_path / 'kvm'} does not exist")


def test_tracefs_not_mounted_and_no_mount_point(monkeypatch, tmp_path, no_container):
    monkeypatch.setattr(tracing, "find_tracefs", lambda: None)
    monkeypatch.setattr(tracing, "TRACEFS", str(tmp_path / "tracing"))
    with pytest.raises(LiveUnavailable) as info:
        TraceSession().start()
    assert str(info.value) == (f"tracefs is not mounted and {tmp_path / 'tracing'} does not "
                               "exist: the kernel needs CONFIG_TRACING")


def test_tracefs_mount_refused(monkeypatch, tmp_path, no_container):
    def refuse(name, *args):
        raise OSError(1, os.strerror(1))

    monkeypatch.setattr(tracing, "find_tracefs", lambda: None)
    monkeypatch.setattr(tracing, "TRACEFS", str(tmp_path))
    monkeypatch.setattr(tracing, "_libc_call", refuse)
    with pytest.raises(LiveUnavailable) as info:
        TraceSession().start()
    assert str(info.value) == ("tracefs is not mounted and mounting it failed (Operation not "
                               f"permitted): run as root, or mount -t tracefs nodev {tmp_path}")


def fake_tracefs(root: Path) -> None:
    """Enough of a tracefs tree for TraceSession to look up events."""
    (root / "instances").mkdir(parents=True)
    ev = root / "events" / "kvmmmu" / "kvm_mmu_get_page"
    ev.mkdir(parents=True)
    (ev / "format").write_text(SAMPLE_FORMAT)


def test_missing_tracepoint_names_it_and_creates_no_instance(monkeypatch, tmp_path):
    fake_tracefs(tmp_path)
    monkeypatch.setattr(tracing, "find_tracefs", lambda: str(tmp_path))
    with pytest.raises(LiveUnavailable) as info:
        TraceSession(["kvmmmu/kvm_mmu_get_page", "kvm/kvm_pio"]).start()
    assert str(info.value) == (
        f"the tracepoint kvm:kvm_pio is missing from {tmp_path}/events: load the KVM module "
        "(modprobe kvm_intel, kvm_amd or kvm_pvm), which defines it")
    assert os.listdir(tmp_path / "instances") == []


def test_a_refused_session_restores_the_signal_handlers(monkeypatch, tmp_path):
    import signal

    fake_tracefs(tmp_path)
    monkeypatch.setattr(tracing, "find_tracefs", lambda: str(tmp_path))
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(LiveUnavailable):
        TraceSession(["kvm/kvm_pio"]).start()
    assert signal.getsignal(signal.SIGTERM) == before


def fake_sys_module(root: Path, params: dict[str, dict[str, str]]) -> str:
    for module, values in params.items():
        (root / module / "parameters").mkdir(parents=True)
        for name, value in values.items():
            (root / module / "parameters" / name).write_text(value + "\n")
    return str(root)


def test_no_vendor_module_is_a_refusal(tmp_path):
    with pytest.raises(LiveUnavailable) as info:
        host_backend(fake_sys_module(tmp_path, {"kvm": {"tdp_mmu": "Y"}}))
    assert str(info.value) == ("no KVM vendor module (kvm_intel, kvm_amd, kvm_pvm) is loaded: "
                               "modprobe kvm_intel or kvm_amd, after enabling virtualization "
                               "in the firmware")


@pytest.mark.parametrize(("params", "backend", "tdp_mmu"), [
    ({"kvm_intel": {"ept": "Y"}, "kvm": {"tdp_mmu": "Y"}}, "ept", True),
    ({"kvm_intel": {"ept": "N"}, "kvm": {"tdp_mmu": "Y"}}, "shadow", False),
    ({"kvm_amd": {"npt": "1"}, "kvm": {"tdp_mmu": "N"}}, "npt", False),
    ({"kvm_amd": {"npt": "0"}}, "shadow", False),
    ({"kvm_pvm": {}, "kvm": {"tdp_mmu": "Y"}}, "shadow", False),
])
def test_backend_comes_from_the_module_parameters(tmp_path, params, backend, tdp_mmu):
    h = host_backend(fake_sys_module(tmp_path, params))
    assert (h.module, h.backend, h.tdp_mmu) == (next(m for m in params if m != "kvm"),
                                                backend, tdp_mmu)
    assert h.tdp == ("none" if backend == "shadow" else backend)
    assert h.release == os.uname().release


def test_kernel_is_major_dot_minor():
    h = host.HostBackend("6.18.44-fc-v669", "kvm_pvm", "shadow", False, False)
    assert h.kernel == "6.18"


def test_guest_features_read_the_cpuid_bits():
    entries = [CpuidEntry(7, 0, 1, 0, (1 << 7) | (1 << 0), 1 << 16, 0),
               CpuidEntry(0x80000001, 0, 0, 0, 0, 0, (1 << 20) | (1 << 29))]
    f = guest_features(entries)
    assert (f.smep, f.fsgsbase, f.la57, f.nx, f.lm) == (True, True, True, True, True)
    assert (f.smap, f.pku, f.xsave, f.svm, f.lam) == (False, False, False, False, False)
    assert host.maxphyaddr(entries) == 36
    assert host.maxphyaddr([CpuidEntry(0x80000008, 0, 0, 0x3030, 0, 0, 0)]) == 48
