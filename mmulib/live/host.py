"""What the host's KVM is: release, vendor module, paging backend, and the guest's CPUID.

``host_backend()`` reads ``uname -r`` and the module parameters under ``/sys/module``: the
vendor module decides the backend (``kvm_intel`` with ``ept=Y`` -> EPT, ``kvm_amd`` with
``npt=1`` -> NPT, either with TDP off or ``kvm_pvm`` -> shadow paging), and
``kvm.tdp_mmu`` says whether the TDP MMU was allowed at load time.  As in
``kvm_mmu_x86_module_init`` / ``kvm_configure_mmu`` (``arch/x86/kvm/mmu/mmu.c``, 6.19), the TDP
MMU is only in use when TDP is: ``tdp_mmu_enabled = tdp_mmu_allowed && tdp_enabled``.

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

__all__ = ["SYS_MODULE", "VENDOR_MODULES", "HostBackend", "host_backend", "guest_features",
           "cpuid_bit", "maxphyaddr", "CPUID_FEATURES"]

SYS_MODULE = "/sys/module"
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

    @property
    def kernel(self) -> str:
        """The release as ``major.minor``, the form mmulib's eras take."""
        m = re.match(r"(\d+)\.(\d+)", self.release)
        return f"{m[1]}.{m[2]}" if m else self.release

    @property
    def tdp(self) -> str:
        """The replay script's ``tdp`` value: ``none``, ``ept`` or ``npt``."""
        return "none" if self.backend == "shadow" else self.backend


def _param(root: Path, module: str, name: str) -> str | None:
    try:
        return (root / module / "parameters" / name).read_text().strip()
    except OSError:
        return None


def _yes(value: str | None) -> bool:
    return value is not None and value.upper() in ("Y", "1")


def host_backend(sys_module: str = SYS_MODULE) -> HostBackend:
    """Read the release and the KVM module parameters of this host.

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
    return HostBackend(os.uname().release, module, backend, allowed and backend != "shadow",
                       allowed)


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
