"""The built-in probe scripts on this host's real KVM, next to the model of this host.

Every step the host runs must agree exactly with the model (the same ``kvm_mmu_get_page``
root records, in the same order); a step the host cannot do must say why ("not supported on
this host: ...") and stop its script, never count as agreement or mismatch.  Each run must
leave tracefs as it found it: the instance list and every buffer's event enables.

These tests need /dev/kvm (the ``kvm`` marker) and a usable tracefs (root); without them they
skip with the missing resource named.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mmulib.live import LiveUnavailable, preflight
from mmulib.live.builtins import builtin, builtin_names
from mmulib.live.compare import AGREE, MISMATCH, NOT_PROBED, NOT_SUPPORTED, REFUSED, probe
from mmulib.live.tracing import snapshot

pytestmark = pytest.mark.kvm

# Scripts that need nothing beyond 64-bit paging and paging off, which every x86-64 KVM runs
# (a host without SMEP or SMAP reports those steps as not supported instead).
EVERYWHERE = ["real-mode", "protected-mode", "paging-4level", "cr0-wp", "efer-nx",
              *[f"cr3-cycle-{n}" for n in range(2, 7)], "boot", "userspace-sregs",
              "memslot-cpuid"]


@pytest.fixture(scope="module")
def host():
    try:
        return preflight()
    except LiveUnavailable as exc:
        pytest.skip(str(exc))


def tracefs_state(*pids: int) -> dict[str, str]:
    """tracefs as a probe must leave it, without other processes' instances."""
    return snapshot(pids)


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_agrees_with_the_model_on_every_supported_step(host, name):
    before = tracefs_state(os.getpid())
    c = probe(builtin(name))
    assert tracefs_state(os.getpid()) == before
    assert c.model.kernel == host.kernel and c.model.tdp == host.tdp
    stopped = False
    for row in c.steps:
        assert row.verdict != MISMATCH, f"{name} op {row.index}: {row.detail}\n{c.text()}"
        assert row.verdict != REFUSED, f"{name} op {row.index}: {row.detail}"
        if row.verdict == AGREE:
            assert not stopped
            assert row.host == row.model
        elif row.verdict == NOT_SUPPORTED:
            assert row.detail and row.host is None or row.changed, row
            stopped = True
        else:
            assert row.verdict == NOT_PROBED and row.detail
            stopped = True
    if name in EVERYWHERE:
        assert {row.verdict for row in c.steps} == {AGREE}, c.text()
    assert any(row.host for row in c.steps) or c.not_supported(), "no root traced at all"


def test_hosts_without_smm_or_a_paging_mode_say_so(host):
    smm = probe(builtin("smm"))
    if not smm.smm:
        assert smm.steps[2].verdict_text == ("not supported on this host: KVM_CAP_X86_SMM is 0 "
                                            "(this KVM offers no SMM)")
        assert [r.verdict for r in smm.steps[3:]] == [NOT_PROBED, NOT_PROBED]
    five = probe(builtin("paging-5level"))
    if not five.features["la57"]:
        assert five.steps[0].verdict_text.startswith(
            "not supported on this host: CR4.LA57 needs a CPU feature that the guest's CPUID "
            "lacks")


def test_the_command_runs_every_builtin_and_exits_0(host):
    before = tracefs_state(os.getpid())
    child = subprocess.Popen([sys.executable, "-m", "mmulib.live", "--builtin", "all"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, out + err
    assert err == ""
    tail = out.split("\nscript ")[-1].splitlines()
    assert tail[0].split()[:3] == ["agree", "MISMATCH", "not"]
    assert [line.split()[0] for line in tail[1:len(builtin_names()) + 1]] == builtin_names()
    total = next(line for line in tail if line.startswith("total")).split()
    assert total[2] == "0"                           # no MISMATCH
    assert tracefs_state(os.getpid(), child.pid) == before    # nothing of the child's left
