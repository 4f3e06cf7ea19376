"""Drawings as DOT text: pure functions from simulator state to deterministic Graphviz source.

Nothing here runs Graphviz or imports Jupyter: each view is a function that
returns a ``str`` of DOT, with semantic node ids (``cpu_role``,
``root_role``, ``root_mmu_prev_roots_0``, ``sp_1_00003784``), collections in a
fixed order and no ``id()``, so the text can be compared exactly in golden
tests and its nodes found by ``<title>`` in the SVG.  :mod:`mmulib.render`
turns the text into SVG.

Views:

* :func:`roles_dot`: the CPU-side role and the root role as bit tables, changed
  fields highlighted with the register bit that changed them.
* :func:`contexts_dot`: the vCPU, its ``mmu``/``walk_mmu`` pointers and each MMU
  context with a role summary.
* :func:`roots_dot`: ``root`` and ``prev_roots`` per context, the pages behind them
  and the most recent root-cache activity.
* :func:`timeline_dot`: the last events and the costs so far;
  :func:`counters_dot` compares the costs of several eras.

>>> from mmulib.sim import Runner
>>> r = Runner("6.4", tdp="ept")
>>> print(contexts_dot(r.machine()).splitlines()[0])
digraph contexts {
"""

from .contexts import context_summary, contexts_dot
from .roles import changed_inputs, role_changes, role_view, roles_dot
from .roots import CacheActivity, cache_activity, roots_dot
from .svg import split_svgs, tidy_svg
from .timeline import TimelineStep, counters_dot, timeline_dot

__all__ = [
    "roles_dot",
    "role_view",
    "role_changes",
    "changed_inputs",
    "contexts_dot",
    "context_summary",
    "roots_dot",
    "CacheActivity",
    "cache_activity",
    "timeline_dot",
    "counters_dot",
    "TimelineStep",
    "tidy_svg",
    "split_svgs",
]
