"""Step-by-step pictures: the iterator walking, faults filling a tree, a zap clearing it.

A *scene* is a list of :class:`Frame` values, each the DOT text of the tree at
one moment plus a caption saying what just happened.  Frames are built by
running the model (on a copy of the tree) and drawing it after every step, so a
slider over them shows exactly what the kernel code does, one loop iteration at
a time.  The widget in :mod:`mmulib.ui.tdp` only displays them.

>>> from mmulib.tdp.examples import small_tree
>>> frames = walk_frames(small_tree(), 0, 4)
>>> len(frames), frames[3].caption
(7, 'step 4/7: L1[0] gfn 0x0, leaf 4K; next: step side')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .draw import tree_dot
from .fault import RET_PF_RETRY, kvm_tdp_mmu_map
from .iter import IterStep, for_each_tdp_pte
from .mmu import TdpEra
from .spte import LEVEL_NAMES, PG_LEVEL_4K, SpteState
from .tree import TdpTree
from .zap import NeedResched, ZapState, zap_gfn_range_steps

__all__ = ["Frame", "walk_frames", "fault_frames", "zap_frames", "default_scenes"]


@dataclass(frozen=True)
class Frame:
    """One picture of a scene: DOT text and what it shows."""

    dot: str
    caption: str


def _move(step: IterStep, after: IterStep | None, end: int, left_root: bool) -> str:
    """The move ``tdp_iter_next`` makes from ``step`` to ``after`` (None: the loop ended)."""
    if after is None and left_root:
        return "no entry left in the root: the iterator is invalid, done"
    if after is None:
        return f"the next SPTE's GFN is not below the end ({end:#x}): done"
    if after.level < step.level:
        return "step down"
    if after.level == step.level:
        return "step side"
    ups = after.level - step.level
    return f"step up{f' x{ups}' if ups > 1 else ''}, then side"


def walk_frames(tree: TdpTree, start: int, end: int, min_level: int = PG_LEVEL_4K) -> list[Frame]:
    """One frame per SPTE a read-only walk over ``[start, end)`` visits."""
    steps, left_root = [], False
    for it in for_each_tdp_pte(tree, start, end, min_level):
        steps.append(it.step())
        last = it
    if steps:
        last.next()
        left_root = not last.valid
    frames = []
    for i, step in enumerate(steps):
        after = steps[i + 1] if i + 1 < len(steps) else None
        caption = (f"step {i + 1}/{len(steps)}: L{step.level}[{step.index}] gfn {step.gfn:#x}, "
                   f"{step.state.value}; next: {_move(step, after, end, left_root)}")
        seen = [(s.table, s.index) for s in steps[:i]]
        frames.append(Frame(tree_dot(tree, seen, (step.table, step.index),
                                     title=f"walk [{start:#x}, {end:#x}) min_level {min_level}"),
                            caption))
    return frames


def fault_frames(faults: Sequence[tuple[int, int]], tree: TdpTree | None = None,
                 era: str | TdpEra = "5.10") -> list[Frame]:
    """The tree before, and after each (gfn, level) fault, with the fault's walk shaded."""
    tree = TdpTree() if tree is None else tree.copy()
    frames = [Frame(tree_dot(tree, title="before the faults"), "before the faults")]
    for gfn, level in faults:
        r = kvm_tdp_mmu_map(tree, gfn, level, era=era)
        seen = [(s.table, s.index) for s in r.path if tree.has_table(s.table)]
        last = seen.pop() if seen else None
        tables = ", ".join(f"L{lv} table at {g:#x}" for lv, g in r.tables_allocated) or "none"
        what = f"{LEVEL_NAMES[level]} leaf installed" if r.installed else "no change"
        caption = (f"fault at gfn {gfn:#x} ({LEVEL_NAMES[level]}): walked {len(r.path)} SPTEs, "
                   f"allocated {tables}; {what}; returns {r.ret_name}")
        if r.installed and r.ret == RET_PF_RETRY:
            caption += " (as 5.10 and 5.12 do for a fault they fixed)"
        if r.leaves_removed:
            caption += "; zapped " + ", ".join(f"{n} x {LEVEL_NAMES[lv]}"
                                               for lv, n in r.leaves_removed)
        frames.append(Frame(tree_dot(tree, seen, last, r.tables_allocated,
                                     title=f"after the fault at gfn {gfn:#x}"), caption))
    return frames


def zap_frames(tree: TdpTree, start: int, end: int, era: str | TdpEra = "5.10",
               need_resched: NeedResched | None = None) -> list[Frame]:
    """The tree before, and after each loop iteration of ``zap_gfn_range`` that did something.

    Iterations that only skip a non-present SPTE are folded into the next frame's caption.
    """
    tree = tree.copy()
    title = f"zap_gfn_range [{start:#x}, {end:#x})"
    frames = [Frame(tree_dot(tree, title=title), f"before zapping [{start:#x}, {end:#x})")]
    z, skipped, seen, freed, nzap = ZapState(), 0, [], 0, 0
    for step in zap_gfn_range_steps(tree, start, end, era=era, need_resched=need_resched,
                                    state=z):
        seen.append((step.table, step.index))
        zapped, nzap = len(z.zapped) > nzap, len(z.zapped)
        if not (zapped or step.yielded) and step.state is SpteState.NON_PRESENT:
            skipped += 1
            continue
        parts = [f"{skipped} non-present SPTEs skipped"] if skipped else []
        where = f"L{step.level}[{step.index}] gfn {step.gfn:#x} ({step.state.value})"
        if zapped:
            parts.append(f"{where}: zapped")
        elif step.yielded:
            parts.append(f"{where}: mmu_lock yielded before looking at it (5.12)")
        else:
            parts.append(f"{where}: sticks out of the range, step down")
        if z.work.tables_freed[freed:]:
            parts.append("freed " + ", ".join(f"L{lv} table at {g:#x}"
                                              for lv, g in z.work.tables_freed[freed:]))
        if step.yielded and zapped:
            parts.append("TLBs flushed, mmu_lock yielded (5.10)")
        if step.yielded:
            parts.append("the walk restarts from the root")
        freed, skipped = len(z.work.tables_freed), 0
        visible = [e for e in seen if tree.has_table(e[0])]
        frames.append(Frame(tree_dot(tree, visible[:-1], visible[-1] if visible else None,
                                     title=title), "; ".join(parts)))
    if skipped:
        frames.append(Frame(frames[-1].dot, f"{skipped} non-present SPTEs skipped; done"))
    return frames


def default_scenes() -> dict[str, list[Frame]]:
    """The chapter's scenes on :func:`~mmulib.tdp.examples.small_tree`."""
    from .examples import SMALL_TREE_FAULTS, small_tree

    tree = small_tree()
    return {
        "walk [0, 4)": walk_frames(tree, 0, 4),
        "walk [0, 0x800), min_level 2": walk_frames(tree, 0, 0x800, min_level=2),
        "faults filling the tree": fault_frames(list(SMALL_TREE_FAULTS) + [(0x201, 1)]),
        "zap [0, 0x80000)": zap_frames(tree, 0, 0x80000),
        "zap [0, 4), yielding after gfn 1": zap_frames(
            tree, 0, 4, need_resched=lambda s: (s.level, s.gfn) == (1, 1)),
    }
