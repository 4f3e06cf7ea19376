"""What the host's KVM is: release, vendor module, paging backend, and the guest's CPUID.

``host_backend()`` reads ``uname -r`` and the module parameters under ``/sys/module``: the
vendor module decides the backend (``kvm_intel`` with ``ept=Y`` -> EPT, ``kvm_amd`` with
``npt=1`` -> NPT, either with TDP off or ``kvm_pvm`` -> shadow paging), and
``kvm.tdp_mmu`` says whether the TDP MMU was allowed at load time.  As in
``kvm_mmu_x86_module_init`` / ``kvm_configure_mmu`` (``arch/x86/kvm/mmu/mmu.c``, 6.19), the TDP
MMU is only in use when TDP is: ``tdp_mmu_enabled = tdp_mmu_allowed && tdp_enabled``.

With EPT or NPT the root level also depends on the host: ``ept_5level`` in the ``vmx flags``
of ``/proc/cpuinfo`` (``vmx_get_max_ept_level`` in ``vmx.c``), and for NPT the host's own
paging depth (``get_npt_level`` in ``svm.c``: 5 when ``pgtable_l5_enabled()``, which is when
``la57`` shows in the flags, ``early_identify_cpu`` in ``arch/x86/kernel/cpu/common.c``).
``kvm_intel.eptad`` says whether EPT A/D bits are in use (``hardware_setup`` clears it when the
CPU lacks them).

``guest_features()`` turns ``KVM_GET_SUPPORTED_CPUID`` into :class:`mmulib.regs.GuestFeatures`,
the CPUID bits that decide which CR4 and EFER bits KVM reserves for the guest
(``__cr4_reserved_bits`` in ``arch/x86/kvm/x86.h``, ``__kvm_valid_efer`` in ``x86.c``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..regs import GuestFeatures
from .errors import LiveUnavailable
from .kvmapi import CpuidEntry

__all__ = ["SYS_MODULE", "CPUINFO", "VENDOR_MODULES", "VENDORS", "cpuinfo_flags", "HostBackend",
           "host_backend", "guest_features", "cpuid_bit", "maxphyaddr", "CPUID_FEATURES"]

SYS_MODULE = "/sys/module"
CPUINFO = "/proc/cpuinfo"
VENDOR_MODULES = ("kvm_intel", "kvm_amd", "kvm_pvm")

# GuestFeatures field -> (leaf, subleaf, register, bit), from the CPUID tables in the SDM
# (Vol. 2, CPUID) and the APM (Vol. 3, appendix E); the same bits as cpufeatures.h.
CPUID_FEATURES: dict[str, tuple[int, int, str, int]] = {
    "lm": (0x80000001, 0, "edx", 29),
    "nx": (0x80000001, 0, "edx", 20),
    "xsave": (1, 0, "ecx", 26),
    "smep": (7, 0, "ebx", 7),
    "smap": (7, 0, "ebx", 20),
    "fsgsbase": (7, 0, "ebx", 0),
    "pku": (7, 0, "ecx", 3),
    "la57": (7, 0, "ecx", 16),
    "umip": (7, 0, "ecx", 2),
    "vmx": (1, 0, "ecx", 5),
    "pcid": (1, 0, "ecx", 17),
    "lam": (7, 1, "eax", 26),
    "shstk": (7, 0, "ecx", 7),
    "ibt": (7, 0, "edx", 20),
    "svm": (0x80000001, 0, "ecx", 2),
    "fxsr_opt": (0x80000001, 0, "edx", 25),
    "autoibrs": (0x80000021, 0, "eax", 8),
}
"""Which CPUID bit each :class:`~mmulib.regs.GuestFeatures` field stands for."""


@dataclass(frozen=True)
class HostBackend:
    """The host's KVM as the probe sees it."""

    release: str            # uname -r, e.g. "6.18.44-fc-v669"
    module: str             # kvm_intel, kvm_amd or kvm_pvm
    backend: str            # "shadow", "ept" or "npt"
    tdp_mmu: bool           # the TDP MMU is in use (allowed and TDP on)
    tdp_mmu_allowed: bool   # the kvm.tdp_mmu parameter
    ept_ad: bool = False    # kvm_intel.eptad: EPT accessed/dirty bits in use
    max_tdp_level: int = 4  # 5 with ept_5level (EPT) or a 5-level host (NPT)
    host_la57: bool = False  # the host kernel runs 5-level paging

    @property
    def vendor(self) -> str:
        """The model's ``vendor``: ``vmx`` for kvm_intel, ``svm`` for kvm_amd, and ``vmx``
        for kvm_pvm (see :data:`VENDORS`)."""
        return VENDORS.get(self.module, "vmx")

    @property
    def kernel(self) -> str:
        """The release as ``major.minor``, the form mmulib's eras take."""
        m = re.match(r"(\d+)\.(\d+)", self.release)
        return f"{m[1]}.{m[2]}" if m else self.release

    @property
    def tdp(self) -> str:
        """The replay script's ``tdp`` value: ``none``, ``ept`` or ``npt``."""
        return "none" if self.backend == "shadow" else self.backend


VENDORS = {"kvm_intel": "vmx", "kvm_amd": "svm", "kvm_pvm": "vmx"}
"""Vendor module -> the model's ``vendor``.

PVM is neither VMX nor SVM, but with shadow paging the model's vendor only decides nested
entry and exit (which the probe cannot drive), INIT before 5.15 (not probed either) and the
6.4 rule that a VMX guest with EPT owns CR0.WP (EPT only), so nothing a probe compares
depends on it; ``vmx`` is the model's default for shadow paging."""


def cpuinfo_flags(path: str = CPUINFO) -> tuple[frozenset[str], frozenset[str]]:
    """The ``flags`` and ``vmx flags`` of the first CPU in ``/proc/cpuinfo`` (empty if
    unreadable)."""
    flags: dict[str, frozenset[str]] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break                         # the end of the first CPU's block
                key, _, value = line.partition(":")
                flags[key.strip()] = frozenset(value.split())
    except OSError:
        pass
    return flags.get("flags", frozenset()), flags.get("vmx flags", frozenset())


def _param(root: Path, module: str, name: str) -> str | None:
    try:
        return (root / module / "parameters" / name).read_text().strip()
    except OSError:
        return None


def _yes(value: str | None) -> bool:
    return value is not None and value.upper() in ("Y", "1")


def host_backend(sys_module: str = SYS_MODULE, cpuinfo: str = CPUINFO) -> HostBackend:
    """Read the release, the KVM module parameters and the CPU flags of this host.

    Raises:
        LiveUnavailable: no KVM vendor module is loaded.
    """
    root = Path(sys_module)
    loaded = [m for m in VENDOR_MODULES if (root / m).is_dir()]
    if not loaded:
        raise LiveUnavailable(
            f"no KVM vendor module ({', '.join(VENDOR_MODULES)}) is loaded: modprobe kvm_intel "
            "or kvm_amd, after enabling virtualization in the firmware")
    module = loaded[0]
    if module == "kvm_intel":
        backend = "ept" if _yes(_param(root, module, "ept")) else "shadow"
    elif module == "kvm_amd":
        backend = "npt" if _yes(_param(root, module, "npt")) else "shadow"
    else:
        backend = "shadow"        # PVM has no hardware second-level paging
    allowed = _yes(_param(root, "kvm", "tdp_mmu"))
    flags, vmx_flags = cpuinfo_flags(cpuinfo)
    la57 = "la57" in flags
    if backend == "ept":
        level = 5 if "ept_5level" in vmx_flags else 4
    else:
        level = 5 if backend == "npt" and la57 else 4
    ept_ad = backend == "ept" and _yes(_param(root, module, "eptad"))
    return HostBackend(os.uname().release, module, backend, allowed and backend != "shadow",
                       allowed, ept_ad, level, la57)


def cpuid_bit(entries: list[CpuidEntry], leaf: int, subleaf: int, reg: str, bit: int) -> bool:
    """Whether ``entries`` has ``bit`` set in ``reg`` of (leaf, subleaf)."""
    for e in entries:
        if e.function == leaf and (e.index == subleaf or not e.flags & 1):
            return bool(getattr(e, reg) >> bit & 1)
    return False


def guest_features(entries: list[CpuidEntry]) -> GuestFeatures:
    """The :class:`~mmulib.regs.GuestFeatures` a guest given ``entries`` has.

    ``lmsle`` stays False: it is not a CPUID bit, and no host this probe targets allows it.
    """
    return GuestFeatures(**{name: cpuid_bit(entries, *where)
                            for name, where in CPUID_FEATURES.items()}, lmsle=False)


def maxphyaddr(entries: list[CpuidEntry]) -> int:
    """CPUID.80000008H:EAX[7:0], the guest's physical address width (36 if absent)."""
    for e in entries:
        if e.function == 0x80000008:
            return e.eax & 0xFF
    return 36
