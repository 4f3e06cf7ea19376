"""Shared helpers for the simulator event-log tests (``tests/test_sim_events*.py``).

No tests live here.  The helpers run a replay script and reduce every event to the tuple
``(name, key fields...)`` that the tests compare exactly, and they build the expected tuples
and the strings ``final_state`` prints for roots.  Which fields count as "key" is listed in
:data:`KEY_FIELDS`; free-text fields (``why``) and derived counts (``pages_to_build``) are left
out on purpose, so a reworded reason never breaks a test but a different root, role or order
does.

Role words in the tests are written as bit arithmetic on the constants of
``tests/test_roles_exact.py`` (imported here and re-exported), the way that file does.
"""

from __future__ import annotations

from typing import Any

from mmulib.sim.replay import ReplayResult, run_script
from test_roles_exact import (  # noqa: F401  (re-exported for the event tests)
    ACC_ALL,
    AD_DISABLED,
    CR4_PAE,
    DIRECT,
    GPTE_IS_8_BYTES,
    GUEST_MODE,
    INVALID,
    NX,
    PT32_ROOT_LEVEL,
    PT32E_ROOT_LEVEL,
    PT64_ROOT_4LEVEL,
    SMM,
    WP,
)

# ---------------------------------------------------------------------------------------------
# Register values used by most scenarios (arch/x86/include/uapi/asm/processor-flags.h).
CR0_PE, CR0_MP, CR0_ET, CR0_NE, CR0_WP, CR0_PG = 1, 2, 1 << 4, 1 << 5, 1 << 16, 1 << 31
CR4_PSE_BIT, CR4_PAE_BIT, CR4_PGE_BIT, CR4_VMXE_BIT = 1 << 4, 1 << 5, 1 << 7, 1 << 13
EFER_SCE, EFER_LME, EFER_LMA, EFER_NX, EFER_SVME = 1, 1 << 8, 1 << 10, 1 << 11, 1 << 12

CR0_64 = CR0_PG | CR0_WP | CR0_NE | CR0_ET | CR0_MP | CR0_PE  # 0x80010033
CR0_64_NOWP = CR0_64 & ~CR0_WP  # 0x80000033
EFER_64 = EFER_NX | EFER_LMA | EFER_LME | EFER_SCE  # 0xd01

#: A 64-bit L1 (long mode, 4-level paging, WP=1, NX=1) with its page tables at 0x100000.
L1_64 = {"cr0": CR0_64, "cr3": 0x100000, "cr4": CR4_PAE_BIT, "efer": EFER_64}

# ---------------------------------------------------------------------------------------------
# Event projection.

#: Fields compared per event name; events not listed are compared by name alone.
KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "kvm_mmu_get_page": ("gfn", "role", "level", "created"),
    "kvm_mmu_reset_context": ("caller",),
    "kvm_mmu_free_roots": ("mmu", "mask", "freed"),
    "fast_pgd_switch": ("mmu", "pgd", "hit", "slot"),
    "kvm_init_mmu": ("caller", "function", "mmu", "reinit"),
    "kvm_init_shadow_ept_mmu": ("mmu", "reinit"),
    "kvm_tdp_mmu_get_root": ("role", "reused", "refcount"),
    "kvm_tdp_mmu_free_root": ("role",),
    "kvm_tdp_mmu_zap_all": ("role",),
    "kvm_tdp_mmu_invalidate_all_roots": ("role",),
    "kvm_mmu_prepare_zap_page": ("gfn", "role"),
    "kvm_make_request": ("request",),
    "kvm_post_set_cr0": ("action",),
    "kvm_mmu_load": ("mmu",),
    "vm_entry": ("mmu",),
    "exit": ("write", "value"),
}

#: The bits of a ``roots_to_free`` mask that select a root: CURRENT and PREVIOUS(0..2).
#: 4.19-5.19 pass ``KVM_MMU_ROOTS_ALL = ~0UL`` from ``kvm_mmu_unload``; only these four bits
#: mean anything to ``kvm_mmu_free_roots``, so the exact-log tests compare ``mask & 0xf`` and
#: ``test_sim_events.py::test_unload_passes_kvm_mmu_roots_all`` checks the literal value.
ROOT_MASK_BITS = 0xF


def project(event: Any, era: str) -> tuple[Any, ...]:
    """``(name, key fields...)`` of one event, as the exact-log tests compare it."""
    keys = KEY_FIELDS.get(event.name, ())
    values = []
    for k in keys:
        v = event.get(k)
        if event.name == "kvm_mmu_free_roots" and k == "mask":
            # 4.18's kvm_mmu_free_roots(vcpu) has no mask: it frees the one root it has.
            v = None if era == "4.18" else v & ROOT_MASK_BITS
        values.append(v)
    return (event.name, *values)


def run(kernel: str, tdp: str, ops: list[dict[str, Any]], sregs: dict[str, int] | None = None,
        **top: Any) -> ReplayResult:
    """Run one replay script (``sregs`` applied with KVM_SET_SREGS before the first op)."""
    script: dict[str, Any] = {"kernel": kernel, "tdp": tdp, "ops": ops, **top}
    if sregs is not None:
        script["sregs"] = sregs
    return run_script(script)


def logs(result: ReplayResult) -> list[list[tuple[Any, ...]]]:
    """The projected events of every op, one list per op."""
    return [[project(e, result.era) for e in evs] for evs in result.per_op]


def assert_logs(result: ReplayResult, expected: list[list[tuple[Any, ...]]]) -> None:
    """Compare op by op, so a failure names the first op whose events differ."""
    got = logs(result)
    assert len(got) == len(expected), f"{len(got)} ops run, {len(expected)} expected"
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"op {i} ({result.ops[i].to_json()}):\n got {g}\nwant {e}"


def roots(result: ReplayResult, ctx: str) -> tuple[str, list[str]]:
    """(current root, prev_roots) of one context as ``final_state`` prints them."""
    c = result.final["contexts"][ctx]
    return c["root"], c["prev_roots"]


# ---------------------------------------------------------------------------------------------
# Expected-event builders (names follow the kernel functions the records stand for).


def get_page(gfn: int, role: int, level: int, created: bool) -> tuple[Any, ...]:
    return ("kvm_mmu_get_page", gfn, role, level, created)


def pae_pages(gfns: list[int] | tuple[int, ...], role: int, created: bool) -> list[tuple]:
    """The four level-2 pages behind ``pae_root`` (mmu_alloc_direct/shadow_roots)."""
    return [get_page(g, role, PT32_ROOT_LEVEL, created) for g in gfns]


def direct_pae_gfns() -> tuple[int, ...]:
    """mmu_alloc_direct_roots with a PAE-level root: pae_root[i] maps GiB i, gfn i << 18."""
    return tuple(i << (30 - 12) for i in range(4))


def reset(caller: str) -> tuple[Any, ...]:
    return ("kvm_mmu_reset_context", caller)


UNLOAD = ("kvm_mmu_unload",)


def free(mmu: str, mask: int | None, *freed: str) -> tuple[Any, ...]:
    return ("kvm_mmu_free_roots", mmu, mask, tuple(freed))


def switch(mmu: str, pgd: int, hit: bool, slot: int | str | None) -> tuple[Any, ...]:
    return ("fast_pgd_switch", mmu, pgd, hit, slot)


def init(caller: str, function: str, mmu: str, reinit: bool) -> tuple[Any, ...]:
    return ("kvm_init_mmu", caller, function, mmu, reinit)


def init_ept(mmu: str, reinit: bool) -> tuple[Any, ...]:
    return ("kvm_init_shadow_ept_mmu", mmu, reinit)


def tdp_get(role: int, reused: bool, refcount: int) -> tuple[Any, ...]:
    return ("kvm_tdp_mmu_get_root", role, reused, refcount)


def tdp_free(role: int) -> tuple[Any, ...]:
    return ("kvm_tdp_mmu_free_root", role)


def load(mmu: str) -> tuple[Any, ...]:
    return ("kvm_mmu_load", mmu)


def entry(mmu: str) -> tuple[Any, ...]:
    return ("vm_entry", mmu)


def exit_(write: str, value: int) -> tuple[Any, ...]:
    return ("exit", write, value)


NO_EXIT = ("no_exit",)


def request(name: str) -> tuple[Any, ...]:
    return ("kvm_make_request", name)


# ---------------------------------------------------------------------------------------------
# Root strings of ``final_state``.

INV = "INVALID"


def sp(gfn: int, role: int, pgd: int | None = None) -> str:
    """A legacy shadow page as a root; ``pgd`` is printed for prev_roots entries."""
    s = f"sp(gfn={gfn:#x}, role={role:#010x})"
    return s if pgd is None else f"{s} pgd={pgd:#x}"


def tdp(role: int, serial: int = 0) -> str:
    return f"tdp_mmu(role={role:#010x}#{serial})"


def pae_root(level: int = PT32E_ROOT_LEVEL) -> str:
    return f"pae_root(l{level})"
