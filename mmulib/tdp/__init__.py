"""The TDP MMU (Ben Gardon, 5.10): its tree, its iterator, its faults, its zaps.

A model of ``arch/x86/kvm/mmu/tdp_mmu.c`` and ``tdp_iter.c``: a sparse tree of
512-entry tables (:class:`TdpTree`), the kernel's pre-order iterator
(:class:`TdpIter`, :func:`walk`), the fault path (:func:`kvm_tdp_mmu_map`) and
teardown (:func:`zap_gfn_range`, :func:`kvm_tdp_mmu_free_root`), with the
differences between 5.10, 5.12 and 5.15 that change what they do; and a
queueing model of ``mmu_lock`` under demand faults (:mod:`~mmulib.tdp.contention`,
calibrated on Ben Gardon's published figures) with an exact fault-by-fault
simulation (:mod:`~mmulib.tdp.sim`).

>>> from mmulib.tdp import TdpTree, kvm_tdp_mmu_map, walk
>>> t = TdpTree()
>>> _ = kvm_tdp_mmu_map(t, 0x1234)
>>> for step in walk(t, 0x1234, 0x1235):
...     print(step)
L4[0] gfn 0x0: non-leaf
L3[0] gfn 0x0: non-leaf
L2[9] gfn 0x1200: non-leaf
L1[52] gfn 0x1234: leaf 4K
"""

from .contention import (
    FaultCosts,
    LockModel,
    Workload,
    calibrate,
    compare,
    predict,
)
from .counts import LevelCounts, mapping_counts
from .examples import SMALL_TREE_FAULTS, small_tree
from .fault import MapResult, kvm_tdp_mmu_map
from .iter import IterStep, TdpIter, for_each_tdp_pte, walk
from .mmu import TDP_ERAS, TdpEra, tdp_era
from .sim import SimResult, simulate
from .spte import SpteState, spte_state
from .tree import TdpTree, TreeError
from .zap import ZapResult, kvm_tdp_mmu_free_root, kvm_tdp_mmu_zap_all, zap_gfn_range

__all__ = [
    "FaultCosts",
    "LockModel",
    "Workload",
    "calibrate",
    "compare",
    "predict",
    "SimResult",
    "simulate",
    "LevelCounts",
    "mapping_counts",
    "SMALL_TREE_FAULTS",
    "small_tree",
    "MapResult",
    "kvm_tdp_mmu_map",
    "IterStep",
    "TdpIter",
    "for_each_tdp_pte",
    "walk",
    "TDP_ERAS",
    "TdpEra",
    "tdp_era",
    "SpteState",
    "spte_state",
    "TdpTree",
    "TreeError",
    "ZapResult",
    "kvm_tdp_mmu_free_root",
    "kvm_tdp_mmu_zap_all",
    "zap_gfn_range",
]
