"""mmulib.chapters: the tables chapters 03-06 show, checked against the kernel facts they teach.

Expected values come from the kernel sources as summarised in shared/reference/kernel-roots.md
(section numbers in the comments), not from running the helpers.  Cost-model outputs are never
pinned: the model is refitted from time to time, so only its own identities are checked.
"""

from __future__ import annotations

import pytest

from mmulib import chapters as ch
from mmulib.sim import cost
from mmulib.sim.workloads import CONFIGS

# --- shared ------------------------------------------------------------------------------------


def test_address_space_letters_round_trip_and_ignore_pcid_and_noflush():
    assert ch.cr3_of("A") == ch.GUEST["cr3"] == 0x102000
    assert ch.space(ch.cr3_of("D")) == "D"
    assert ch.space(ch.cr3_of("C") | 0x5 | 1 << 63) == "C"
    assert ch.space(0x5000000) == "0x5000000"


def test_html_table_escapes_cells_and_bolds_rows_that_differ():
    out = ch.html_table(["a", "b"], [["<x>", "1", "2"], ["y", "1", "1"]],
                        bold_if_different=True)
    assert "&lt;x&gt;" in out and "<x>" not in out
    assert out.count("font-weight:bold") == 1


# --- chapter 03: prev_roots --------------------------------------------------------------------


def test_rotations_are_the_kernel_tables():
    # kernel-roots.md §5.4, starting from C | 0 1 2.
    rows = {r[0]: r[1:] for r in ch.rotation_rows()}
    a, b, c = zip(*rows.values())
    assert [s.split(" (")[0] for s in c] == [
        "C | 0 1 2", "0 | C 1 2", "1 | C 0 2", "2 | C 0 1", "INV | C 0 1"]
    assert rows["none is usable"][2].endswith("(evicts 2)")
    # 5.10-5.17 rotate the same way; only the miss leaves the LRU root in `root` for the
    # caller to free.
    assert [s.split(" (")[0] for s in b][:4] == [s.split(" (")[0] for s in c][:4]
    assert rows["none is usable"][1] == "2 | C 0 1 (evicts 2)"
    # 4.19/4.20 never test the current root: it is pushed even when it is the wanted one.
    assert rows["C is usable"][0] == "2 | C 0 1 (evicts 2)"


def test_find_without_current_closes_the_gap():
    assert ch.without_current_rows() == [
        ["0 is usable", "0 | 1 2 INV"], ["1 is usable", "1 | 0 2 INV"],
        ["2 is usable", "2 | 0 1 INV"], ["none is usable", "INV | 0 1 2"]]


def test_round_robin_over_four_spaces_hits_from_4_19_and_4_18_has_no_cache():
    walk = ch.cr3_walk("5.19", "BCDAB")
    assert [r[1] for r in walk] == ["miss", "miss", "miss", "hit P2", "hit P2"]
    assert [r[2] for r in walk][-2:] == ["A | D C B", "B | A D C"]
    assert walk[0][3] == "new root" and walk[3][3] == ""
    assert {r[1] for r in ch.cr3_walk("4.18", "BA")} == {"no cache"}
    assert ch.cr3_walk("4.18", "BA")[1][3] == "root found in hash"


def test_5_15_frees_prev_roots_on_every_flushing_mov_cr3_without_pcid():
    # 5.15.0 kvm_invalidate_pcid has no PCIDE=0 early return (Lai Jiangshan's "Cache CR3 in
    # prev_roots when PCID is disabled" added it; the 5.17-rc5 tree has it).
    assert [r[2] for r in ch.cr3_walk("5.15", "BA")] == ["B | · · ·", "A | · · ·"]
    assert [r[1] for r in ch.cr3_walk("5.17", "BA")] == ["miss", "hit P0"]
    assert [r[1] for r in ch.cr3_walk("5.15", "BA", pcide=True, noflush=True)] == [
        "miss", "hit P0"]


def test_outcomes_by_era_has_one_row_per_era():
    rows = ch.outcomes_by_era("BA", eras=["4.18", "4.19", "6.18"])
    assert rows == [["4.18", "no cache", "no cache"], ["4.19", "miss", "hit P0"],
                    ["6.18", "miss", "hit P0"]]


@pytest.mark.parametrize("kernel", ["4.19", "5.10", "5.19", "6.18"])
def test_lru_eviction_makes_round_robin_over_five_spaces_miss_every_time(kernel):
    hits4, misses4 = ch.switch_hits(kernel, 4, 50)
    assert misses4 == 3 and hits4 == 4 * 50 - 3  # current + KVM_MMU_NUM_PREV_ROOTS
    assert ch.switch_hits(kernel, 5, 50) == (0, 250)


def test_32_to_64_bit_switch_hits_only_from_5_18():
    # 5499ea73e7db "look for a cached PGD when going from 32-bit to 64-bit" (§5.3): L2 is a
    # PAE guest without nested paging under shadow paging; VM exit back to 64-bit L1.
    def exits(kernel):
        rows = ch.nested_trace(kernel, nested_paging=False, config="shadow", cr4=0x20, efer=0)
        return [r[3].split(";")[0] for r in rows if r[0] == "vmexit"]
    assert set(exits("5.17")) == {
        "fast_pgd_switch missed: fast switch only for 64-bit guests on 64-bit roots"}
    assert set(exits("5.18")) == {"fast_pgd_switch hit prev_roots[0]"}


# --- chapter 04: CR0.WP ------------------------------------------------------------------------


def test_wp_toggle_per_era():
    said, n = ch.wp_toggle("5.10", "tdp_mmu")
    assert n["reset_context"] == 2 and n["tdp_roots_allocated"] == 2
    assert n["pt_pages_torn_down"] > 0 and "kvm_set_cr0 reset the MMU" in said[0]
    said, n = ch.wp_toggle("6.4", "tdp_mmu")  # guest-owned CR0.WP (VMX with EPT)
    assert n["no_exits"] == 2 and n["exits"] == 0 and n["reset_context"] == 0
    _, n = ch.wp_toggle("6.4", "npt_tdp_mmu")  # SVM: exits, re-inits, keeps the roots
    assert n["exits"] == 2 and n["reset_context"] == 0 and n["permission_bitmask"] == 2
    _, n = ch.wp_toggle("6.4", "shadow")  # the shadow root role still has cr0_wp
    assert n["reset_context"] == 2


def test_role_split_lets_other_vcpus_keep_the_tdp_root_alive():
    _, n510 = ch.wp_toggle("5.10", "tdp_mmu", vcpus=2)
    _, n519 = ch.wp_toggle("5.19", "tdp_mmu", vcpus=2)
    assert n510["tdp_roots_allocated"] == 1 and n510["pt_pages_torn_down"] > 0
    assert n519["reset_context"] == 2
    assert n519["tdp_roots_allocated"] == 0 and n519["pt_pages_torn_down"] == 0


def test_wp_rows_leave_out_the_tdp_mmu_before_5_10():
    rows = ch.wp_rows(["4.20", "5.10"], ["legacy", "tdp_mmu"])
    assert [(r[0], r[1]) for r in rows] == [("4.20", "legacy"), ("5.10", "legacy"),
                                            ("5.10", "tdp_mmu")]


def test_stale_cr0_wp_in_the_walker_and_its_refresh():
    r = ch.new_runner("6.4", "tdp_mmu")
    ch.apply(r, {"op": "run"}, ch.WP_CLEAR)
    m = r.machine()
    assert not m.cr0 & ch.WP
    assert ch.walker_cr0_wp(m, refresh=False) == 1  # no exit: the cached cpu_role bit is old
    assert ch.walker_cr0_wp(m, refresh=True) == 0
    assert ch.supervisor_write_faults(1) and not ch.supervisor_write_faults(0)
    assert not ch.supervisor_write_faults(1, writable=True)


def test_fit_and_check_rows_list_every_published_figure_once():
    rows = ch.fit_and_check_rows()
    assert len(rows) == len(cost.FIGURES)
    assert [r[0] for r in rows].count("fit") == sum(f.use == "fit" for f in cost.FIGURES)
    published = sorted(r[5] for r in rows)
    assert published == sorted(ch._num(f.value, f.unit) for f in cost.FIGURES)


def test_overhead_rows_are_before_minus_after():
    rows = {(r[0], r[1]): r[2] for r in ch.overhead_rows()}
    assert rows[("v6.1.23", "legacy")] == f"{7.65 - 3.36:.2f} s"


# --- chapter 05: nested ------------------------------------------------------------------------


def test_contexts_while_l2_runs_with_nested_ept():
    r = ch.new_runner("5.19", "legacy")
    ch.apply(r, {"op": "run"}, ch.l2_entry("vmx"))
    rows = {row[0]: row for row in ch.contexts_rows(r.machine())}
    assert rows["guest_mmu"][1] == "arch.mmu" and rows["nested_mmu"][1] == "walk_mmu"
    assert rows["root_mmu"][3].startswith("sp gfn 0x0")  # L1's root stays current
    assert rows["nested_mmu"][3] == "·"  # a walker: never any root
    r = ch.new_runner("4.18", "legacy")
    ch.apply(r, {"op": "run"}, ch.l2_entry("vmx"))
    assert [row[:2] for row in ch.contexts_rows(r.machine())] == [
        ["mmu", "arch.mmu"], ["nested_mmu", "walk_mmu"]]


def test_round_trips_per_era():
    # §9.6: 4.18 resets on entry (nested_vmx_load_cr3) and on exit; 4.19 switches PGDs on
    # the single MMU and re-inits; from 5.10 both switches hit the current root.
    assert ch.round_trip("4.18")["reset_context"] == 2
    n = ch.round_trip("4.19")
    assert n["reset_context"] == 0 and n["pgd_hits"] == 2 and n["permission_bitmask"] > 0
    n = ch.round_trip("5.10")
    assert n["pgd_hits"] == 2 and n["permission_bitmask"] == 0 and n["reset_context"] == 0
    # §9.7: nested SVM still resets both ways in 4.20, not in 5.10.
    assert ch.round_trip("4.20", "svm")["reset_context"] == 2
    assert ch.round_trip("5.10", "svm")["reset_context"] == 0


def test_nested_trace_names_the_contexts():
    rows = ch.nested_trace("5.19", "svm")
    assert [r[:3] for r in rows[:2]] == [["vmrun", "guest_mmu", "nested_mmu"],
                                        ["vmexit", "root_mmu", "root_mmu"]]


@pytest.mark.parametrize("kernel", ["4.18", "4.20", "5.19"])
def test_round_trip_cycles_add_up_to_the_cost_model(kernel):
    parts = ch.round_trip_cycles(kernel)
    assert sum(parts.values()) == pytest.approx(cost.nested_round_trip(kernel), rel=1e-9)


# --- chapter 06: kvm_mmu_reset_context callers -------------------------------------------------

SEANS_EIGHT = {"nested_vmx_restore_host_state", "kvm_mmu_after_set_cpuid", "kvm_vcpu_reset",
               "enter_smm", "kvm_smm_changed", "set_efer", "kvm_post_set_cr0",
               "kvm_post_set_cr4"}


def test_callers_are_seans_eight_plus_the_sregs_ioctls():
    named = {c.name: c.sean for c in ch.CALLERS if c.sean is not None}
    assert set(named) == SEANS_EIGHT and sorted(named.values()) == list(range(1, 9))
    assert [c.name for c in ch.CALLERS if c.sean is None] == ["__set_sregs / __set_sregs2"]


@pytest.mark.parametrize("caller", ch.CALLERS, ids=lambda c: c.name)
def test_each_trigger_runs_its_caller_in_5_15(caller):
    # 5.15 (not 5.17): CPUID can still change after KVM_RUN there.
    got = ch.caller_cost(caller, "5.15", "legacy")
    assert caller.name.split(" /")[0] in got.resets


def test_5_17_accepts_no_cpuid_change_after_run():
    cpuid = next(c for c in ch.CALLERS if c.name == "kvm_mmu_after_set_cpuid")
    assert ch.caller_cost(cpuid, "5.17", "tdp_mmu").resets == ()
    assert ch.verdict(ch.caller_cost(cpuid, "5.17", "tdp_mmu")) == "nothing"


def test_era_map_shows_what_was_made_cheap():
    m = {row[0]: dict(zip(ch.ERA_NAMES, row[1:])) for row in ch.era_map("tdp_mmu")}
    assert m["kvm_post_set_cr0"]["5.17"] == "teardown"
    assert m["kvm_post_set_cr0"]["6.4"] == "no exit"  # guest-owned CR0.WP
    assert m["enter_smm"]["6.4"] == "reset"  # edbdb43fc96b: roots found again
    assert m["kvm_post_set_cr4"]["6.18"] == "reset"
    assert m["set_efer"]["4.20"] == "n/a"  # no TDP MMU before 5.10
    legacy = {row[0]: row[1:] for row in ch.era_map("legacy", eras=["4.18", "5.17"])}
    assert legacy["nested_vmx_restore_host_state"] == ["n/a", "reset"]
    assert set(ch.VERDICTS) >= {v for row in ch.era_map("shadow") for v in row[1:]}


def test_caller_rows_price_with_the_cost_model():
    cr0 = next(c for c in ch.CALLERS if c.name == "kvm_post_set_cr0")
    got = ch.caller_cost(cr0, "5.17", "tdp_mmu")
    rows = {r[0]: r for r in ch.caller_rows(cr0, "tdp_mmu", eras=["4.20", "5.17"])}
    assert rows["4.20"][2] == "n/a"
    assert rows["5.17"][5] == f"{got.cycles + got.cycles_off_vcpu:,.0f}"
    assert got.cycles > 0 and rows["5.17"][1] == "kvm_post_set_cr0"


def test_nested_caller_needs_vmx_with_ept():
    fail = ch.CALLERS[0]
    assert ch.caller_cost(fail, "5.19", "shadow") is None
    assert ch.caller_cost(fail, "5.19", "npt_legacy") is None
    assert "npt_legacy" in CONFIGS
