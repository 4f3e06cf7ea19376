"""The kernel releases mmulib models, as named eras.

An *era* is a release whose MMU role code mmulib mirrors.  Any other release
string is answered by the newest modelled era that is not after it
(``"6.1"`` -> ``5.19``, ``"v6.6.47"`` -> ``6.4``), and every
output names the era that answered.

Sources for each era are the single-release trees listed in the README's
"Where the facts come from" section (``arch/x86/include/asm/kvm_host.h`` and
``arch/x86/kvm/mmu.c`` / ``arch/x86/kvm/mmu/mmu.c`` of that release).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .layouts import (
    EXT_ROLE_4_20,
    EXT_ROLE_5_10,
    EXT_ROLE_5_15,
    EXT_ROLE_5_19,
    PAGE_ROLE_4_18,
    PAGE_ROLE_5_10,
    PAGE_ROLE_5_15,
    PAGE_ROLE_5_17,
    PAGE_ROLE_5_19,
    PAGE_ROLE_6_14,
    Layout,
)

__all__ = ["Era", "ERAS", "UnknownReleaseError", "resolve", "parse_release", "era_names"]


class UnknownReleaseError(ValueError):
    """A release string that is malformed or older than the oldest modelled era."""


@dataclass(frozen=True)
class Era:
    """One modelled kernel release and the facts that distinguish it."""

    name: str
    version: tuple[int, int]
    page: Layout
    ext: Layout | None
    summary: str

    def __str__(self) -> str:
        return self.name

    def at_least(self, name: str) -> bool:
        return self.version >= parse_release(name)

    # Data-model landmarks, named after the kernel change that introduced them.
    @property
    def has_prev_roots(self) -> bool:
        """prev_roots[KVM_MMU_NUM_PREV_ROOTS] (Junaid Shahid's fast CR3 switch, 4.19)."""
        return self.version >= (4, 19)

    @property
    def split_contexts(self) -> bool:
        """root_mmu / guest_mmu split and ``vcpu->arch.mmu`` as a pointer (4.20)."""
        return self.version >= (4, 20)

    @property
    def has_cpu_role(self) -> bool:
        """cpu_role + root_role instead of mmu_role (Paolo Bonzini's split, 5.19)."""
        return self.version >= (5, 19)

    @property
    def cpu_side_name(self) -> str:
        """The ``struct kvm_mmu`` member that holds the CPU-side role in this era."""
        if self.version < (4, 20):
            return "base_role"
        return "cpu_role" if self.has_cpu_role else "mmu_role"

    @property
    def combined_c_name(self) -> str | None:
        if self.version < (4, 20):
            return None
        return "kvm_cpu_role" if self.has_cpu_role else "kvm_mmu_role"

    @property
    def has_tdp_mmu(self) -> bool:
        """Ben Gardon's TDP MMU exists (5.10)."""
        return self.version >= (5, 10)

    @property
    def tdp_mmu_default(self) -> bool:
        """Module parameter ``tdp_mmu`` defaults to on (5.15)."""
        return self.version >= (5, 15)


ERAS: tuple[Era, ...] = (
    Era("4.18", (4, 18), PAGE_ROLE_4_18, None,
        "single embedded MMU, base_role only, no root cache"),
    Era("4.19", (4, 19), PAGE_ROLE_4_18, None,
        "prev_roots cache (fast CR3 switch); stored role masked with mmu_base_role_mask"),
    Era("4.20", (4, 20), PAGE_ROLE_4_18, EXT_ROLE_4_20,
        "root_mmu/guest_mmu split; kvm_mmu_role = base + extended role; skip re-init"),
    Era("5.10", (5, 10), PAGE_ROLE_5_10, EXT_ROLE_5_10,
        "TDP MMU (off by default); gpte_is_8_bytes; ext.maxphyaddr"),
    Era("5.15", (5, 15), PAGE_ROLE_5_15, EXT_ROLE_5_15,
        "5.14 role cleanup (role_regs, efer_nx, ext.efer_lma); TDP MMU on by default"),
    Era("5.17", (5, 17), PAGE_ROLE_5_17, EXT_ROLE_5_15,
        "has_4_byte_gpte (inverted sense)"),
    Era("5.18", (5, 18), PAGE_ROLE_5_17, EXT_ROLE_5_15,
        "mmu->root as kvm_mmu_root_info; new PGD loaded after init; reworked root cache"),
    Era("5.19", (5, 19), PAGE_ROLE_5_19, EXT_ROLE_5_19,
        "cpu_role / root_role split; role.passthrough"),
    Era("6.4", (6, 4), PAGE_ROLE_5_19, EXT_ROLE_5_19,
        "CR0.WP-only toggles keep TDP roots; TDP MMU roots preserved until invalidated"),
    Era("6.14", (6, 14), PAGE_ROLE_6_14, EXT_ROLE_5_19,
        "role.is_mirror (TDX); nested NPT roles have guest_mode=1"),
    Era("6.18", (6, 18), PAGE_ROLE_6_14, EXT_ROLE_5_19,
        "newest modelled release"),
)

_RELEASE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:-rc(\d+))?(?:[-+].*)?$")


def parse_release(release: str) -> tuple[int, int]:
    """``"v6.6.47"`` -> ``(6, 6)``; ``"5.17-rc5"`` -> ``(5, 17)``."""
    m = _RELEASE.match(release.strip())
    if not m:
        raise UnknownReleaseError(
            f"release {release!r} is not of the form MAJOR.MINOR[.PATCH][-rcN] "
            f"(e.g. '5.19', 'v6.6.47')"
        )
    return int(m.group(1)), int(m.group(2))


def resolve(release: str | Era) -> Era:
    """The newest modelled era not after ``release``.

    >>> resolve("v6.6.47").name
    '6.4'
    >>> resolve("5.19").name
    '5.19'
    """
    if isinstance(release, Era):
        return release
    version = parse_release(str(release))
    best = None
    for era in ERAS:
        if era.version <= version:
            best = era
    if best is None:
        raise UnknownReleaseError(
            f"release {release!r} is older than the oldest modelled era "
            f"({ERAS[0].name}); modelled: {', '.join(era_names())}"
        )
    return best


def era_names() -> list[str]:
    return [e.name for e in ERAS]
