"""mmulib.ui.session: the panel's model, without widgets."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mmulib.ui.session import DEFAULT_SREGS, Refused, Session, address_space_cr3


def test_a_session_starts_with_the_guest_running_its_roots_loaded() -> None:
    s = Session("6.4", tdp="ept")
    m = s.machine
    assert (m.cr0, m.cr3, m.cr4, m.efer) == tuple(DEFAULT_SREGS[k] for k in
                                                  ("cr0", "cr3", "cr4", "efer"))
    assert m.running and m.ctx["root_mmu"].root.valid
    assert [st.label for st in s.steps] == ["KVM_SET_SREGS", "VM entry"]
    assert s.user_steps == [] and s.prev_machine is not None


def test_a_switch_while_the_guest_runs_is_the_guest_instruction() -> None:
    s = Session("5.17", tdp="ept")
    step = s.toggle("CR0", "WP")
    assert step.op.name == "mov_cr0" and dict(step.op.args)["value"] == 0x80000033
    assert step.label == "CR0.WP 1→0"
    assert [e.name for e in step.events][:2] == ["exit", "kvm_mmu_reset_context"]
    assert not s.bit("CR0", "WP")


def test_a_switch_while_the_guest_is_stopped_is_kvm_set_sregs() -> None:
    s = Session("6.4", tdp="ept")
    s.cpuid()  # userspace op: the guest is stopped until the next VM entry
    step = s.toggle("EFER", "NX")
    assert step.op.name == "set_sregs" and step.label == "EFER.NX 1→0 (KVM_SET_SREGS)"


def test_lme_follows_pg_when_set_by_userspace() -> None:
    s = Session("6.4", tdp="ept")
    s.cpuid()
    s.toggle("CR0", "PG")  # paging off: LMA must go, as the CPU would clear it
    assert s.machine.efer & 0x400 == 0
    s.toggle("CR0", "PG")
    assert s.machine.efer & 0x400


def test_a_refused_switch_names_the_rule_and_changes_nothing() -> None:
    s = Session("6.4", tdp="ept")
    state, steps = s.state, list(s.steps)
    with pytest.raises(Refused) as info:
        s.toggle("CR4", "LA57")
    assert info.value.rule == "kvm_set_cr4: LA57 cannot change in long mode"
    assert "LA57 toggled" in info.value.reason
    assert s.state == state and s.steps == steps


def test_impossible_operations_are_refused_with_the_simulators_reason() -> None:
    s = Session("6.4", tdp="ept")
    with pytest.raises(Refused, match="RSM outside SMM"):
        s.rsm()
    with pytest.raises(Refused, match="no L2 is running"):
        s.leave_l2()
    with pytest.raises(Refused, match="unknown op"):
        s.apply({"op": "reboot"})


def test_undo_and_reset() -> None:
    s = Session("6.4", tdp="none")
    start = s.state
    s.mov_cr3(1)
    after_one = s.state
    s.mov_cr3(2)
    assert s.undo().label.startswith("MOV CR3 to address space 2")
    assert s.state == after_one
    s.reset()
    assert s.state == start and s.user_steps == []
    assert s.undo() is None  # the setup cannot be undone


def test_reconfigure_replays_the_steps_and_reports_what_it_left_out() -> None:
    s = Session("6.4", tdp="ept")
    s.toggle("CR0", "WP")
    s.enter_l2()
    assert s.reconfigure(kernel="5.17") == []
    assert s.era == "5.17" and [st.label for st in s.user_steps] == [
        "CR0.WP 1→0", "VMLAUNCH into L2 (nested EPT on)"]
    skipped = s.reconfigure(tdp="npt")  # the recorded VMLAUNCH needs VMX
    assert s.machine.vendor == "svm" and len(skipped) == 1
    assert "vmlaunch needs a VMX host" in skipped[0].rule


def test_a_configuration_that_cannot_exist_is_refused_and_kept_out() -> None:
    s = Session("6.4", tdp="ept")
    state = s.state
    with pytest.raises(Refused, match="TDP MMU does not exist before 5.10"):
        s.reconfigure(kernel="4.20", tdp_mmu=True)
    assert s.state == state and s.era == "6.4"


def test_enter_l2_uses_the_vendor_and_nested_paging_setting() -> None:
    s = Session("6.4", tdp="npt", nested_paging=False)
    step = s.enter_l2()
    assert step.op.name == "vmrun" and step.label == "VMRUN into L2 (nested NPT off)"
    assert Session("6.4", tdp="none").enter_l2().label == "VMLAUNCH into L2 (nested EPT off)"


def test_counters_cover_every_step() -> None:
    s = Session("5.17", tdp="ept")
    s.toggle("CR0", "WP")
    c = s.counters()
    assert c["reset_context"] == 2 and c["tdp_roots_freed"] == 1 and c["exits"] == 1


def test_address_spaces() -> None:
    assert address_space_cr3(0) == DEFAULT_SREGS["cr3"]
    with pytest.raises(ValueError, match="0..63"):
        address_space_cr3(64)


def test_the_pure_ui_modules_import_no_jupyter() -> None:
    code = ("import sys, mmulib.ui, mmulib.ui.session, mmulib.ui.explain, mmulib.ui.scene\n"
            "bad = {'IPython', 'ipywidgets', 'graphviz', 'traitlets', 'ipykernel'}\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
