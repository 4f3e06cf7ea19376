"""Real guests on /dev/kvm, traced by the kernel's own kvm_mmu_get_page tracepoint.

The expected role words are worked out by hand from the 6.18/6.19 rules
(shared/reference/kernel-roles.md §10; ``kvm_calc_cpu_role``, ``kvm_init_shadow_mmu``,
``mmu_alloc_root``, ``mmu_alloc_direct_roots`` and ``mmu_alloc_shadow_roots`` in
``arch/x86/kvm/mmu/mmu.c``, 6.19 tree).  Role bits (``union kvm_mmu_page_role``, 6.18):
level 3:0, has_4_byte_gpte 4, quadrant 6:5, direct 7, access 10:8, efer_nx 12, cr0_wp 13,
smep_andnot_wp 14, smap_andnot_wp 15, smm 31:24.  For shadow paging ``root_role`` is
``cpu_role.base`` with ``level = max(level, 3)`` and ``efer_nx = 1``, and each root page is
``root_role`` with the level and quadrant of ``mmu_alloc_root``.

The scenarios are for shadow paging (what kvm_pvm, or kvm_intel/kvm_amd with ept/npt off,
runs); on an EPT/NPT host KVM's roots do not follow the guest's CR3, and those tests say so
and skip.  Everything else only needs /dev/kvm (the ``kvm`` marker) and tracefs.
"""

from __future__ import annotations

import ctypes

import pytest

from mmulib.live import LiveUnavailable, guest_features, preflight
from mmulib.live.guest import STEP_PORT, load_segments
from mmulib.live.kvmapi import KVM_CAP_NR_MEMSLOTS, Kvm, KvmRegs
from mmulib.live.probe import cpuid_diff, run_script

pytestmark = pytest.mark.kvm

ACC_ALL = 7 << 8          # access = ACC_ALL (wux)
EFER_NX = 1 << 12         # role.efer_nx
CR0_WP = 1 << 13          # role.cr0_wp
DIRECT = 1 << 7           # role.direct
GPTE4 = 1 << 4            # role.has_4_byte_gpte
SMEP_ANDNOT_WP = 1 << 14  # role.smep_andnot_wp
SMAP_ANDNOT_WP = 1 << 15  # role.smap_andnot_wp
SMM = 1 << 24             # role.smm = 1

# A 64-bit guest (CR0.PG, CR4.PAE, EFER.LMA): cpu_role level 4, so the root is level 4.
ROOT64_WP = 4 | ACC_ALL | EFER_NX | CR0_WP           # 0x3704
ROOT64_NOWP = 4 | ACC_ALL | EFER_NX                  # 0x1704
# Paging off: cpu_role is direct with level 0; root_role level max(0, 3) = 3, so
# mmu_alloc_direct_roots allocates four level-2 roots at gfn i << 18 (1 GiB each).
NONPAGING = 2 | DIRECT | ACC_ALL | EFER_NX           # 0x1782
PAE_GFNS = [0, 0x40000, 0x80000, 0xC0000]

SHADOW_64 = {"cr0": "0x80010011", "cr4": "0x20", "efer": "0xd00", "cr3": "0x102000"}


def rec(gfn: int, role: int, created: bool) -> dict:
    return {"event": "kvm_mmu_get_page", "gfn": gfn, "role": role, "level": role & 0xF,
            "created": created}


@pytest.fixture(scope="module")
def host():
    """The host's backend; skips (with the one-line reason) only if tracefs is unusable."""
    try:
        return preflight()
    except LiveUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def shadow(host):
    if host.backend != "shadow":
        pytest.skip(f"these records are worked out for shadow paging; this host's {host.module} "
                    f"uses {host.backend.upper()}, whose roots do not follow the guest's CR3")
    return host


def test_api_version_memslots_and_cpuid():
    with Kvm() as kvm:
        assert kvm.api_version == 12
        assert kvm.vcpu_mmap_size >= 4096 and kvm.vcpu_mmap_size % 4096 == 0
        assert kvm.check_extension(KVM_CAP_NR_MEMSLOTS) > 0
        assert {0, 1, 0x80000001} <= {e.function for e in kvm.supported_cpuid()}


def test_every_register_set_is_read_back_unchanged():
    with Kvm() as kvm:
        vm = kvm.create_vm()
        vm.add_memory(0x200000)
        vcpu = vm.create_vcpu()
        vcpu.set_cpuid(kvm.supported_cpuid())
        regs = KvmRegs(*range(0x11, 0x11 + 16), 0x1000, 0x2)
        vcpu.set_regs(regs)
        back = vcpu.get_regs()
        assert [getattr(back, n) for n, _ in KvmRegs._fields_] == \
               [getattr(regs, n) for n, _ in KvmRegs._fields_]
        s = vcpu.get_sregs()
        s.cr0, s.cr4, s.efer, s.cr3 = 0x11, 0x20, 0x0, 0x102000
        load_segments(s, 32)
        vcpu.set_sregs(s)
        got = vcpu.get_sregs()
        assert (got.cr0, got.cr3, got.cr4, got.efer) == (0x11, 0x102000, 0x20, 0)
        assert (got.cs.selector, got.cs.db, got.cs.l, got.cs.limit) == (8, 1, 0, 0xFFFFFFFF)
        assert ctypes.sizeof(s) == 312


def test_real_mode_guest_exits_on_out_then_hlt():
    with Kvm() as kvm:
        vm = kvm.create_vm()
        mem = vm.add_memory(0x10000)
        vcpu = vm.create_vcpu()
        vcpu.set_cpuid(kvm.supported_cpuid())
        mem.write(0x1000, bytes.fromhex("b042e610f4"))     # mov al,0x42; out 0x10,al; hlt
        s = vcpu.get_sregs()
        load_segments(s, 16)
        vcpu.set_sregs(s)
        regs = vcpu.get_regs()
        regs.rip, regs.rflags = 0x1000, 2
        vcpu.set_regs(regs)
        ex = vcpu.run()
        assert (ex.name, ex.port, ex.direction, ex.data) == ("IO", STEP_PORT, 1, b"\x42")
        assert vcpu.run().name == "HLT"
        assert vcpu.get_regs().rip == 0x1005


def test_64_bit_guest_roots_follow_cr3_wp_and_nx(shadow):
    ops = [{"op": "run"},
           {"op": "mov_cr3", "value": "0x103000"},
           {"op": "mov_cr3", "value": "0x102000"},
           {"op": "mov_cr0", "value": "0x80000011"},
           {"op": "wrmsr_efer", "value": "0x500"},
           {"op": "mov_cr0", "value": "0x80010011"},
           {"op": "mov_cr4", "value": "0x30"}]
    r = run_script({"sregs": SHADOW_64, "ops": ops})
    assert r.initial.status == "ok" and r.initial.changed == {} and r.initial.records == []
    assert [s.status for s in r.steps] == ["ok"] * 7
    assert [s.records for s in r.steps] == [
        [rec(0x102, ROOT64_WP, True)],      # first entry: the root for CR3 0x102000
        [rec(0x103, ROOT64_WP, True)],      # new CR3: fast_pgd_switch misses, a new root
        [],                                 # back: prev_roots[0] is usable, no lookup at all
        [rec(0x102, ROOT64_NOWP, True)],    # WP is a role bit: reset, cr0_wp = 0
        [rec(0x102, ROOT64_NOWP, False)],   # NX too, but root_role.efer_nx is forced to 1
        [rec(0x102, ROOT64_WP, False)],     # WP back: the first root page still exists
        [rec(0x102, ROOT64_WP, False)],     # CR4.PSE is a role bit (reset), not a root bit
    ]
    assert [s.regs for s in r.steps] == [
        {"cr0": 0x80010011, "cr3": 0x102000, "cr4": 0x20, "efer": 0xD00},
        {"cr0": 0x80010011, "cr3": 0x103000, "cr4": 0x20, "efer": 0xD00},
        {"cr0": 0x80010011, "cr3": 0x102000, "cr4": 0x20, "efer": 0xD00},
        {"cr0": 0x80000011, "cr3": 0x102000, "cr4": 0x20, "efer": 0xD00},
        {"cr0": 0x80000011, "cr3": 0x102000, "cr4": 0x20, "efer": 0x500},
        {"cr0": 0x80010011, "cr3": 0x102000, "cr4": 0x20, "efer": 0x500},
        {"cr0": 0x80010011, "cr3": 0x102000, "cr4": 0x30, "efer": 0x500},
    ]
    assert all(s.changed == {} for s in r.steps)


def test_32_bit_protected_mode_without_paging_has_four_direct_roots(shadow):
    ops = [{"op": "run"},
           {"op": "mov_cr4", "value": "0x20"},    # PAE is a role bit even with paging off
           {"op": "mov_cr0", "value": "0x10"},    # PE is not: back to real mode, no reset
           {"op": "mov_cr0", "value": "0x11"},
           {"op": "mov_cr4", "value": "0x0"}]
    r = run_script({"sregs": {"cr0": "0x11", "cr4": "0", "efer": "0", "cr3": "0"}, "ops": ops})
    assert [s.status for s in r.steps] == ["ok"] * 5
    assert [s.records for s in r.steps] == [
        [rec(g, NONPAGING, True) for g in PAE_GFNS],
        [rec(g, NONPAGING, False) for g in PAE_GFNS],
        [],
        [],
        [rec(g, NONPAGING, False) for g in PAE_GFNS],
    ]
    assert [s.regs["cr0"] for s in r.steps] == [0x11, 0x11, 0x10, 0x11, 0x11]


def test_a_boot_from_real_mode_to_long_mode(shadow):
    ops = [{"op": "run"}, {"op": "mov_cr3", "value": "0x102000"},
           {"op": "mov_cr0", "value": "0x11"}, {"op": "mov_cr4", "value": "0x20"},
           {"op": "wrmsr_efer", "value": "0x100"}, {"op": "mov_cr0", "value": "0x80000011"},
           {"op": "mov_cr3", "value": "0x103000"}]
    r = run_script({"sregs": {"cr0": "0x10", "cr4": "0", "efer": "0", "cr3": "0"}, "ops": ops})
    assert [s.status for s in r.steps] == ["ok"] * 7
    assert [s.records for s in r.steps] == [
        [rec(g, NONPAGING, True) for g in PAE_GFNS],
        # MOV CR3 with paging off: kvm_mmu_new_pgd cannot keep PAE roots (fast_pgd_switch
        # needs a 4/5-level root), so they are freed and looked up again
        [rec(g, NONPAGING, False) for g in PAE_GFNS],
        [],                                                  # PE: not a role bit
        [rec(g, NONPAGING, False) for g in PAE_GFNS],        # PAE
        [rec(g, NONPAGING, False) for g in PAE_GFNS],        # EFER.LME
        [rec(0x102, ROOT64_NOWP, True)],                     # PG with LME: long mode, WP 0
        [rec(0x103, ROOT64_NOWP, True)],
    ]
    assert r.steps[5].regs == {"cr0": 0x80000011, "cr3": 0x102000, "cr4": 0x20, "efer": 0x500}


def test_32_bit_paging_runs_or_is_reported_not_supported(shadow):
    two_level = run_script({"sregs": {"cr0": "0x80010011", "cr4": "0", "efer": "0",
                                      "cr3": "0x102000"}, "ops": [{"op": "run"}]})
    pae = run_script({"sregs": {"cr0": "0x80010011", "cr4": "0x20", "efer": "0",
                                "cr3": "0x102000"}, "ops": [{"op": "run"}]})
    if shadow.module == "kvm_pvm":
        # PVM emulates non-64-bit code and does not shadow 32-bit page tables: its
        # KVM_SET_SREGS keeps everything but CR0.PG (and a guest's MOV CR0 gets #GP).
        for result, mode, cr4 in ((two_level, "32-bit 2-level paging", 0), (pae, "PAE paging",
                                                                            0x20)):
            assert result.initial.status == "unsupported"
            assert result.initial.reason == (
                "not supported on this host: KVM_SET_SREGS took the state but holds "
                f"CR0=0x10011 (asked 0x80010011), so {mode} does not run here")
            assert result.initial.regs == {"cr0": 0x10011, "cr3": 0x102000, "cr4": cr4,
                                           "efer": 0}
            assert result.steps[0].status == "not probed"
        return
    # 2-level guest: root_role level 3 with has_4_byte_gpte; four level-2 roots for the
    # guest's one page directory, quadrant i each (each shadows a quarter of it).
    assert two_level.steps[0].records == [
        rec(0x102, 2 | GPTE4 | (i << 5) | ACC_ALL | EFER_NX | CR0_WP, True) for i in range(4)]
    # PAE guest: one level-2 root per PDPTE, at the page directory it points to (the
    # probe puts the four directories for CR3 0x102000 at 0x103000 ... 0x106000, where
    # the model expects them).
    assert pae.steps[0].records == [
        rec(0x103 + i, 2 | ACC_ALL | EFER_NX | CR0_WP, True) for i in range(4)]


def test_smm_runs_or_is_reported_not_supported(shadow):
    r = run_script({"sregs": SHADOW_64, "ops": [{"op": "run"}, {"op": "smi"}, {"op": "rsm"}]})
    assert r.steps[0].records == [rec(0x102, ROOT64_WP, True)]
    if not r.smm:
        assert (r.steps[1].status, r.steps[1].reason) == (
            "unsupported", "not supported on this host: KVM_CAP_X86_SMM is 0 (this KVM "
                           "offers no SMM)")
        assert (r.steps[2].status, r.steps[2].reason) == (
            "not probed", "an earlier op stopped the script: op 1 (smi) was unsupported")
        return
    # SMM entry: paging off with role.smm = 1, so four new direct roots; RSM back to the
    # 64-bit state finds the first root page again.
    assert r.steps[1].records == [rec(g, NONPAGING | SMM, True) for g in PAE_GFNS]
    assert r.steps[2].records == [rec(0x102, ROOT64_WP, False)]


def test_cr4_smep_runs_or_is_reported_not_supported(shadow):
    r = run_script({"sregs": {**SHADOW_64, "cr0": "0x80000011"},
                    "ops": [{"op": "run"}, {"op": "mov_cr4", "value": "0x100020"},
                            {"op": "mov_cr4", "value": "0x300020"},
                            {"op": "mov_cr0", "value": "0x80010011"}]})
    assert r.steps[0].records == [rec(0x102, ROOT64_NOWP, True)]
    if not r.features.smep:
        assert (r.steps[1].status, r.steps[1].reason) == (
            "unsupported", "not supported on this host: CR4.SMEP needs a CPU feature that the "
                           "guest's CPUID lacks (as KVM holds it after KVM_SET_CPUID2 from "
                           "KVM_GET_SUPPORTED_CPUID)")
        return
    # SMEP with WP = 0: smep_andnot_wp = 1, a different root
    assert r.steps[1].records == [rec(0x102, ROOT64_NOWP | SMEP_ANDNOT_WP, True)]
    assert r.steps[1].regs["cr4"] == 0x100020
    if not r.features.smap:
        assert r.steps[2].status == "unsupported" and "CR4.SMAP" in r.steps[2].reason
        return
    # SMAP too: smap_andnot_wp = 1; then WP = 1 clears both *_andnot_wp bits
    assert r.steps[2].records == [rec(0x102, ROOT64_NOWP | SMEP_ANDNOT_WP | SMAP_ANDNOT_WP,
                                      True)]
    assert r.steps[3].records == [rec(0x102, ROOT64_WP, True)]


def test_the_cpuid_kvm_holds_is_read_back_and_decides_the_features(shadow):
    with Kvm() as kvm:
        supported = kvm.supported_cpuid()
        vm = kvm.create_vm()
        vcpu = vm.create_vcpu()
        vcpu.set_cpuid(supported)
        held = vcpu.get_cpuid()
    r = run_script({"sregs": SHADOW_64, "ops": [{"op": "run"}]})
    assert r.features == guest_features(held)
    assert r.cpuid_changed == cpuid_diff(supported, held)


def test_cpuid_memslot_and_ops_the_probe_cannot_drive(shadow):
    ops = [{"op": "run"}, {"op": "memslot", "change": "delete"}, {"op": "run"},
           {"op": "memslot", "change": "move"}, {"op": "run"}, {"op": "cpuid"}, {"op": "run"},
           {"op": "init"}]
    r = run_script({"sregs": SHADOW_64, "ops": ops})
    assert [s.status for s in r.steps] == ["ok"] * 7 + ["not probed"]
    assert [s.records for s in r.steps[:7]] == [
        [rec(0x102, ROOT64_WP, True)],
        [],
        # a deleted memslot zaps every shadow page (kvm_mmu_zap_all_fast makes them
        # obsolete): the next entry creates the root again
        [rec(0x102, ROOT64_WP, True)],
        [],
        [rec(0x102, ROOT64_WP, True)],
        [],
        # KVM_SET_CPUID2 after KVM_RUN only checks the data is unchanged (kvm_set_cpuid,
        # 5.16+): no kvm_vcpu_after_set_cpuid, no MMU reset, the root stays loaded
        [],
    ]
    assert r.steps[7].reason == ("INIT needs an in-kernel local APIC, which the probe's VM "
                                 "does not create")


def test_each_run_ends_at_its_own_marker(shadow):
    r = run_script({"sregs": SHADOW_64, "ops": [{"op": "run"}] * 3})
    assert [s.records for s in r.steps] == [[rec(0x102, ROOT64_WP, True)], [], []]
    assert [s.exit for s in r.steps] == [f"KVM_EXIT_IO port 0x{STEP_PORT:x} data {m:02x}"
                                         for m in (1, 2, 3)]
