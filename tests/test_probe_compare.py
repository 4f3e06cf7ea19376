"""The probe's comparison, built-ins, text, drawings and recorded run, without KVM.

Host results are built by hand (:class:`LiveResult` of :class:`StepResult`), so every
verdict can be reached on any machine.  The last tests check the recorded example run
(``notebooks/data/probe-example.json``, a real ``kvm_pvm`` host) against today's model: a
change to the simulator that breaks agreement with real KVM fails here even where there is
no ``/dev/kvm``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mmulib.live import builtins as bi
from mmulib.live.compare import (
    AGREE, MISMATCH, NOT_PROBED, NOT_SUPPORTED, REFUSED, Comparison, ModelStep,
    compare, judge, model_config, op_text, run_model,
)
from mmulib.live.host import HostBackend
from mmulib.live.probe import UNSUPPORTED, LiveResult, StepResult
from mmulib.live.recorded import ENV, load, run_or_load, save
from mmulib.live.report import comparison_text, summary_html, summary_text
from mmulib.live.views import model_session, sequence_dot, timelines
from mmulib.regs import GuestFeatures
from mmulib.sim.ops import parse_op

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "notebooks" / "data" / "probe-example.json"
PVM = HostBackend("6.18.44-fc-v669", "kvm_pvm", "shadow", False, False)
SHADOW = model_config(PVM, 48)
ROOT64 = {"gfn": 0x102, "role": 0x3704, "level": 4, "created": True}


def rec(gfn: int, role: int, created: bool, level: int = 4) -> dict:
    return {"event": "kvm_mmu_get_page", "gfn": gfn, "role": role, "level": level,
            "created": created}


def live(script: dict, steps: list[StepResult], initial: StepResult | None = None,
         host: HostBackend = PVM) -> LiveResult:
    first = initial or StepResult(-1, {"op": "sregs"})
    return LiveResult(host, GuestFeatures(), False, first, steps)


# --- the model's configuration -----------------------------------------------------------------


@pytest.mark.parametrize(("host", "keys"), [
    (PVM, {"tdp": "none", "tdp_mmu": False, "vendor": "vmx"}),
    (HostBackend("6.18.1", "kvm_intel", "ept", True, True, True, 5),
     {"tdp": "ept", "tdp_mmu": True, "vendor": "vmx", "ept_ad": True, "max_tdp_level": 5}),
    (HostBackend("6.6.30", "kvm_amd", "npt", False, False, host_la57=True),
     {"tdp": "npt", "tdp_mmu": False, "vendor": "svm", "host_la57": True}),
    (HostBackend("5.15.0-91-generic", "kvm_intel", "shadow", False, True),
     {"tdp": "none", "tdp_mmu": False, "vendor": "vmx"}),
])
def test_model_config_follows_the_host_backend(host, keys):
    cfg = model_config(host, 46)
    got = cfg.script_keys()
    assert got == {"kernel": host.kernel, "maxphyaddr": 46, **keys}
    assert cfg.era == {"6.18": "6.18", "6.6": "6.4", "5.15": "5.15"}[host.kernel]


def test_model_config_names_the_era_it_resolved():
    assert model_config(HostBackend("6.12.9", "kvm_amd", "npt", True, True)).describe() == (
        "mmulib.sim era 6.4 (resolve('6.12')): NPT, TDP MMU, vendor svm, guest MAXPHYADDR 48")


# --- the model's side ---------------------------------------------------------------------------


def test_the_model_runs_every_op_of_a_valid_script():
    initial, steps = run_model(bi.builtin("cr3-cycle-2"), SHADOW)
    assert initial.records == [] and not initial.refused
    assert [s.records for s in steps[:2]] == [
        [ROOT64], [{**ROOT64, "gfn": 0x103}]]
    assert steps[2].records == [] and "fast_pgd_switch hit prev_roots[0]" in steps[2].note


def test_a_refused_op_keeps_the_ops_before_it_and_stops_the_model():
    script = {"sregs": bi.LONG, "ops": [{"op": "run"}, {"op": "mov_cr4", "value": "0x0"},
                                        {"op": "run"}]}
    initial, steps = run_model(script, SHADOW)
    assert steps[0].records == [ROOT64]
    assert steps[1].refused and steps[1].records is None
    assert steps[1].note.startswith("op 1 (mov_cr4): ")
    assert steps[2].records is None and steps[2].note == "the model refused op 1"


def test_refused_initial_sregs():
    script = {"sregs": {**bi.LONG, "efer": "0x100"}, "ops": [{"op": "run"}]}
    initial, steps = run_model(script, SHADOW)
    assert initial.refused and initial.note.startswith("sregs: ")
    assert steps[0].records is None


# --- verdicts ------------------------------------------------------------------------------------


def test_equal_records_agree_and_different_ones_do_not():
    ok = StepResult(0, {"op": "run"}, records=[rec(0x102, 0x3704, True)])
    assert judge(ok, ModelStep([ROOT64], "")).verdict == AGREE
    other = judge(ok, ModelStep([{**ROOT64, "created": False}], ""))
    assert (other.verdict, other.detail) == (MISMATCH, "the root records differ")
    assert judge(ok, ModelStep([], "")).verdict == MISMATCH     # a record too many
    assert judge(StepResult(0, {"op": "run"}), ModelStep([ROOT64], "")).verdict == MISMATCH


def test_unsupported_steps_keep_the_hosts_reason_and_are_not_compared():
    st = StepResult(1, {"op": "smi"}, "unsupported",
                    UNSUPPORTED + "KVM_CAP_X86_SMM is 0 (this KVM offers no SMM)")
    row = judge(st, ModelStep([ROOT64], ""))
    assert (row.verdict, row.host, row.compared) == (NOT_SUPPORTED, None, False)
    assert row.verdict_text == ("not supported on this host: KVM_CAP_X86_SMM is 0 (this KVM "
                                "offers no SMM)")


def test_refusals_agree_only_when_both_sides_refuse():
    st = StepResult(1, {"op": "mov_cr4"}, "refused", "the guest's mov_cr4 raised #GP (...)")
    assert judge(st, ModelStep(None, "op 1 (mov_cr4): ...", refused=True)).verdict == REFUSED
    row = judge(st, ModelStep([ROOT64], ""))
    assert row.verdict == MISMATCH and row.detail.startswith("KVM refused the op")
    ran = judge(StepResult(1, {"op": "mov_cr4"}), ModelStep(None, "no", refused=True))
    assert ran.verdict == MISMATCH and "the model did not" in ran.detail


def test_a_register_the_host_did_not_take_is_not_supported_and_stops_the_comparison():
    changed = {"cr4": {"requested": 0x30, "read back": 0x20}}
    script = {"sregs": bi.LONG, "ops": [{"op": "run"}, {"op": "mov_cr4", "value": "0x30"},
                                        {"op": "run"}]}
    steps = [StepResult(0, {"op": "run"}, records=[rec(0x102, 0x3704, True)]),
             StepResult(1, {"op": "mov_cr4"}, records=[rec(0x102, 0x3704, False)],
                        changed=changed),
             StepResult(2, {"op": "run"})]
    c = compare(script, live(script, steps))
    assert [s.verdict for s in c.steps] == [AGREE, AGREE, NOT_SUPPORTED, NOT_PROBED]
    assert c.steps[2].detail == "the host ran the op but holds CR4=0x20 (asked 0x30)"
    assert c.steps[3].detail.startswith("op 1 left the host in another state")
    assert c.agrees and c.counts() == {AGREE: 2, MISMATCH: 0, NOT_SUPPORTED: 1, REFUSED: 0,
                                       NOT_PROBED: 1}


def test_the_initial_row_is_kvm_set_sregs():
    script = bi.builtin("paging-2level")
    first = StepResult(-1, {"op": "sregs"}, "unsupported",
                       UNSUPPORTED + "KVM_SET_SREGS took the state but holds CR0=0x10011")
    steps = [StepResult(i, o, "not probed", "an earlier op stopped the script")
             for i, o in enumerate(script["ops"])]
    c = compare(script, live(script, steps, first))
    assert c.steps[0].index == -1 and c.steps[0].verdict == NOT_SUPPORTED
    assert {s.verdict for s in c.ops} == {NOT_PROBED}
    assert c.steps[1].model is not None            # the model's side is still shown
    assert [s.index for s in c.not_supported()] == [-1]


# --- output --------------------------------------------------------------------------------------


def sample() -> Comparison:
    script = {"name": "demo", "sregs": bi.LONG,
              "ops": [{"op": "run"}, {"op": "mov_cr3", "value": "0x103000"}, {"op": "smi"}]}
    steps = [StepResult(0, script["ops"][0], records=[rec(0x102, 0x3704, True)]),
             StepResult(1, script["ops"][1], records=[rec(0x103, 0x3704, False)]),
             StepResult(2, script["ops"][2], "unsupported", UNSUPPORTED + "no SMM")]
    return compare(script, live(script, steps))


def test_text_puts_model_and_host_side_by_side_with_a_verdict_per_row():
    lines = comparison_text(sample()).splitlines()
    assert lines[0] == "probe demo"
    assert lines[1] == "host:  Linux 6.18.44-fc-v669, kvm_pvm: shadow paging, kvm.tdp_mmu=N"
    header = lines[4]
    assert header.split() == ["step", "op", "model:", "kvm_mmu_get_page", "host:",
                              "kvm_mmu_get_page", "verdict"]
    row1 = next(x for x in lines if x.startswith("   1  "))
    assert row1.split() == ["1", "mov_cr3", "0x103000", "gfn", "0x103", "role", "0x3704", "l4",
                            "new", "gfn", "0x103", "role", "0x3704", "l4", "found", "MISMATCH:",
                            "the", "root", "records", "differ"]
    row2 = next(x for x in lines if x.startswith("   2  "))
    assert re.search(r"  -  +not supported on this host: no SMM$", row2)
    assert lines[-1] == ("verdicts: 2 agree, 1 MISMATCH, 1 not supported on this host")


def test_summary_counts_and_lists_what_the_host_could_not_do():
    text = summary_text([sample()])
    assert text.splitlines()[1].split() == ["demo", "2", "1", "1", "0", "0"]
    assert text.endswith("not supported on this host:\n  no SMM  [demo op 2]\n")
    assert "color:#b71c1c" in summary_html([sample()])


def test_json_round_trip(tmp_path):
    c = sample()
    back = Comparison.from_json(json.loads(json.dumps(c.to_json())))
    assert back == c
    assert load(save([c], tmp_path / "run.json")) == [c]


def test_op_text_reads_like_the_script():
    assert op_text({"op": "sregs", "cr0": "0x11", "cr3": "0x0"}) == "KVM_SET_SREGS cr0=0x11 cr3=0x0"
    assert op_text({"op": "memslot", "change": "move"}) == "memslot move"


def test_sequence_drawing_is_deterministic_and_marks_each_verdict():
    dot = sequence_dot(sample())
    assert dot == sequence_dot(sample())
    assert dot.count("verdict_") == 4 and "#ffcdd2" in dot and "#ffe0b2" in dot
    names = [d.name for d in timelines(sample())]
    assert names == ["model", "host"]


def test_model_session_replays_the_script_after_the_setup():
    s = model_session(sample(), 1)
    assert s.machine.cr3 == 0x103000
    assert [st.label for st in s.user_steps] == ["[0] run", "[1] mov_cr3 0x103000"]


# --- built-in scripts ---------------------------------------------------------------------------


def test_builtins_cover_what_the_issue_asks_for():
    names = bi.builtin_names()
    assert {"real-mode", "protected-mode", "paging-2level", "paging-pae", "paging-4level",
            "paging-5level", "cr0-wp", "efer-nx", "cr4-smep", "cr4-smap", "wp-smep-smap-nx",
            "boot", "userspace-sregs", "smm"} <= set(names)
    assert [n for n in names if n.startswith("cr3-cycle-")] == [
        f"cr3-cycle-{n}" for n in range(2, 7)]
    assert any(o["op"] == "set_sregs" for o in bi.builtin("userspace-sregs")["ops"])


@pytest.mark.parametrize("name", bi.builtin_names())
def test_every_builtin_is_a_valid_script_the_model_runs(name):
    script = bi.builtin(name)
    for i, o in enumerate(script["ops"]):
        parse_op(o, i)
    for cfg in (SHADOW, model_config(HostBackend("6.18.2", "kvm_intel", "ept", True, True)),
                model_config(HostBackend("5.10.0", "kvm_amd", "npt", True, True))):
        initial, steps = run_model(script, cfg)
        assert not initial.refused and not any(s.refused for s in steps), cfg


def test_wp_smep_smap_nx_visits_all_sixteen_combinations_one_bit_apart():
    ops = bi.builtin("wp-smep-smap-nx")["ops"]
    cr0, cr4, efer = 0x80010011, 0x20, 0xD00
    seen = set()
    for o in ops:
        if o["op"] == "mov_cr0":
            cr0 = int(o["value"], 16)
        elif o["op"] == "mov_cr4":
            cr4 = int(o["value"], 16)
        elif o["op"] == "wrmsr_efer":
            efer = int(o["value"], 16)
        seen.add((cr0 >> 16 & 1, cr4 >> 20 & 1, cr4 >> 21 & 1, efer >> 11 & 1))
    assert len(seen) == 16 and len(ops) == 16


def test_unknown_builtin_lists_the_names():
    with pytest.raises(ValueError, match="no built-in probe script 'nope' .one of: real-mode,"):
        bi.builtin("nope")


def test_builtins_are_copies():
    bi.builtin("boot")["ops"].clear()
    assert bi.builtin("boot")["ops"]


# --- the recorded example --------------------------------------------------------------------


def test_recorded_example_has_every_builtin_and_agrees():
    recorded = load(RECORDED)
    assert [c.name for c in recorded] == bi.builtin_names()
    assert all(c.agrees for c in recorded)
    assert sum(c.counts()[AGREE] for c in recorded) > 100


@pytest.mark.parametrize("c", load(RECORDED), ids=lambda c: c.name)
def test_todays_model_still_agrees_with_the_recorded_host(c):
    # The recorded run was made on a real host; re-run the model for that host now.
    assert c.script == {k: v for k, v in bi.builtin(c.name).items()}, "built-in changed: " \
        "re-record with mmulib probe --builtin all --json > notebooks/data/probe-example.json"
    initial, steps = run_model(c.script, c.model)
    for row, model in zip(c.ops, steps):
        if row.verdict == AGREE:
            assert model.records == row.host, f"op {row.index} {op_text(row.op)}"


def test_run_or_load_takes_the_recording_when_asked(monkeypatch):
    monkeypatch.setenv(ENV, "recorded")
    got, source = run_or_load(RECORDED, ["smm"])
    assert [c.name for c in got] == ["smm"]
    assert source.startswith("the recorded example from Linux 6.18.44")
    assert source.endswith("MMULIB_PROBE=recorded is set")


def test_run_or_load_falls_back_when_there_is_no_kvm(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    got, source = run_or_load(RECORDED, ["cr0-wp"], device="/nonexistent/kvm")
    assert [c.name for c in got] == ["cr0-wp"]
    assert "no live probe here (/nonexistent/kvm does not exist" in source
