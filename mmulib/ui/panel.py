"""The control panel: switches for the vCPU's state, and drawings that follow every click.

In a notebook::

    from mmulib.ui import Panel
    Panel(kernel="6.4", tdp="ept")

One :class:`Panel` composes small builders (:mod:`mmulib.ui.controls`), one or
two :class:`~mmulib.ui.session.Session` s (the simulator with history), the
views (:mod:`mmulib.ui.views`) and the "what just happened" line
(:mod:`mmulib.ui.explain`).  Every callback goes through :meth:`Panel._guard`:
a refusal by KVM's rules is shown beside the control that asked for it and
changes nothing; any other exception is shown in the panel's error area (as a
message, never a traceback) and kept in ``panel.error``.

:class:`EraComparison` is the same panel driving two releases with the same
clicks, side by side, with their costs in one table.
"""

from __future__ import annotations

import functools
import html
import time
from collections.abc import Callable
from operator import methodcaller
from typing import Any

import ipywidgets as widgets

from ..eras import era_names, resolve
from .controls import SWITCHES, button, labelled_row, rule_label, switch
from .explain import explain
from .scene import VIEWS, session_dots
from .session import ADDRESS_SPACES, Refused, Session, Step, machine_of
from .views import Views, counters_html

__all__ = ["Panel", "EraComparison", "Lane"]

COMPARE_VIEWS = ("roles", "roots", "timeline")


class Lane:
    """One session on the panel and what its last action did."""

    def __init__(self, key: str, session: Session) -> None:
        self.key = key
        self.session = session
        self.prev_state: tuple[Any, ...] | None = None  # the state shown before this one
        self.cause = ""
        self.what = f"{session.era}: ready (KVM_SET_SREGS, then the first VM entry)."
        self.detail = ""

    def refused(self, exc: Refused) -> None:
        why = f" ({exc.reason})" if exc.reason else ""
        self.what = f"{exc.label}: refused by {self.session.era}: {exc.rule}{why}; nothing changed."
        self.detail = ""
        self.prev_state = self.session.state

    def stepped(self, step: Step) -> None:
        self.prev_state, self.cause = step.before, step.label
        self.what = explain(step, machine_of(step.before), self.session.machine)
        self.detail = step.summary

    def moved(self, what: str, prev_state: tuple[Any, ...] | None) -> None:
        self.prev_state, self.cause, self.what, self.detail = prev_state, what, what, ""


class Panel(widgets.VBox):
    """Switches, buttons and live drawings for one release (or two, see :class:`EraComparison`)."""

    def __init__(self, kernel: str = "6.4", tdp: str = "ept", *, compare: str | None = None,
                 tdp_mmu: bool | None = None, vendor: str | None = None,
                 cr0_wp_backport: str = "none") -> None:
        opts = dict(tdp=tdp, tdp_mmu=tdp_mmu, vendor=vendor, cr0_wp_backport=cr0_wp_backport)
        kernels = [kernel] if compare is None else [compare, kernel]
        self.lanes = [Lane(k, Session(kernel=v, **opts)) for k, v in zip("ab", kernels)]
        self.error: Exception | None = None
        self.timing: dict[str, Any] = {}
        self._syncing = False
        super().__init__([self._make_header(), self._make_config(), *self._make_registers(),
                          self._make_modes(), self._make_actions(), self._make_status(),
                          self._make_views()])
        self.add_class("mmulib-panel")
        self._refresh()

    # ------------------------------------------------------------------ builders
    def _make_header(self) -> widgets.HTML:
        self.header = widgets.HTML()
        return self.header

    def _make_config(self) -> widgets.HBox:
        self.eras = [widgets.Dropdown(options=era_names(), value=lane.session.era,
                                      description="era" if i == len(self.lanes) - 1 else "vs",
                                      layout=widgets.Layout(width="11em")) for i, lane in
                     enumerate(self.lanes)]
        for i, w in enumerate(self.eras):
            w.add_class("mmulib-era")
            w.observe(self._guard(functools.partial(self._on_era, i), "config"), names="value")
        self.tdp = widgets.ToggleButtons(options=[("shadow", "none"), ("EPT", "ept"),
                                                  ("NPT", "npt")],
                                         tooltips=["no TDP: KVM shadows the guest's tables",
                                                   "Intel EPT", "AMD NPT"],
                                         style={"button_width": "5.5em"})
        self.tdp_mmu = switch("TDP", "MMU")
        self.tdp_mmu.description = "TDP MMU"
        self.vendor = widgets.ToggleButtons(options=[("VMX", "vmx"), ("SVM", "svm")],
                                            style={"button_width": "4em"})
        self.tdp.observe(self._guard(lambda c: self._reconfigure(tdp=c["new"]), "config"),
                         names="value")
        self.tdp_mmu.observe(self._guard(lambda c: self._reconfigure(tdp_mmu=c["new"]), "config"),
                             names="value")
        self.vendor.observe(self._guard(lambda c: self._reconfigure(vendor=c["new"]), "config"),
                            names="value")
        self.rules = {"config": rule_label("config")}
        return labelled_row("setup", [*self.eras, self.tdp, self.tdp_mmu, self.vendor],
                            self.rules["config"])

    def _make_registers(self) -> list[widgets.HBox]:
        self.switches: dict[str, widgets.ToggleButton] = {}
        rows = []
        for reg, names in SWITCHES.items():
            self.rules[reg] = rule_label(reg)
            for name in names:
                w = switch(reg, name)
                w.observe(self._guard(functools.partial(self._on_switch, reg, name), reg),
                          names="value")
                self.switches[f"{reg}.{name}"] = w
            rows.append(labelled_row(reg, [self.switches[f"{reg}.{n}"] for n in names],
                                     self.rules[reg]))
        return rows

    def _make_modes(self) -> widgets.HBox:
        self.smm = switch("mode", "SMM")
        self.smm.description = "SMM"
        self.l2 = switch("mode", "L2")
        self.l2.description = "L2 running"
        self.nested_paging = switch("mode", "nested")
        self.smm.observe(self._guard(self._on_smm, "modes"), names="value")
        self.l2.observe(self._guard(self._on_l2, "modes"), names="value")
        self.nested_paging.observe(self._guard(
            lambda c: self._reconfigure(nested_paging=c["new"]), "modes"), names="value")
        self.rules["modes"] = rule_label("modes")
        return labelled_row("modes", [self.smm, self.l2, self.nested_paging],
                            self.rules["modes"])

    def _make_actions(self) -> widgets.HBox:
        self.space = widgets.Dropdown(options=list(range(ADDRESS_SPACES)), value=1,
                                      layout=widgets.Layout(width="4.5em"))
        spec: list[tuple[str, str, str, Callable[[Session], Step | None]]] = [
            ("MOV CR3 to", "mov_cr3", "the guest loads CR3 of the chosen address space",
             lambda s: s.mov_cr3(self.space.value)),
            ("VM entry", "run", "KVM enters the guest (vcpu_enter_guest)",
             methodcaller("vm_entry")),
            ("SMI", "smi", "a system-management interrupt: enter SMM", methodcaller("smi")),
            ("RSM", "rsm", "the guest leaves SMM", methodcaller("rsm")),
            ("CPUID update", "cpuid", "userspace sets the guest CPUID (KVM_SET_CPUID2)",
             methodcaller("cpuid")),
            ("memslot change", "memslot", "userspace deletes a memslot",
             methodcaller("memslot")),
        ]
        self.buttons: dict[str, widgets.Button] = {}
        items: list[widgets.Widget] = []
        for label, css, tip, fn in spec:
            b = button(label, tip, css)
            b.on_click(self._guard(lambda _b, fn=fn: self._act("actions", fn), "actions"))
            self.buttons[css] = b
            items += [b, self.space] if css == "mov_cr3" else [b]
        for label, css, tip, fn2 in (("undo", "undo", "take back the last step", self._undo),
                                     ("reset", "reset", "back to the first state", self._reset)):
            b = button(label, tip, css)
            b.on_click(self._guard(lambda _b, fn2=fn2: fn2(), "actions"))
            self.buttons[css] = b
            items.append(b)
        self.rules["actions"] = rule_label("actions")
        return labelled_row("actions", items, self.rules["actions"])

    def _make_status(self) -> widgets.VBox:
        self.what = widgets.HTML()
        self.what.add_class("mmulib-what")
        self.errors = widgets.HTML()
        self.errors.add_class("mmulib-errors")
        return widgets.VBox([self.what, self.errors])

    def _make_views(self) -> widgets.VBox:
        one = len(self.lanes) == 1
        names = VIEWS if one else COMPARE_VIEWS
        keys = [n if one else f"{lane.key}/{n}" for n in names for lane in self.lanes]
        self.views = Views(keys)
        self.costs = widgets.HTML(layout=widgets.Layout(min_width="18em"))
        self.costs.add_class("mmulib-costs")
        w = self.views.widgets
        for view in w.values():
            view.layout.flex = "1 1 auto"
            view.layout.min_width = "0"
        if one:
            w["roles"].layout.flex = "0 1 auto"
            return widgets.VBox([widgets.HBox([w["roles"], w["roots"]]),
                                 widgets.HBox([w["contexts"], w["timeline"], self.costs])])
        rows = [widgets.HBox([w[f"{lane.key}/{n}"] for lane in self.lanes]) for n in names]
        return widgets.VBox([self.costs, *rows])

    # ------------------------------------------------------------------ callbacks
    def _guard(self, fn: Callable[..., Any], row: str) -> Callable[..., None]:
        """Run a callback; show refusals beside ``row`` and other errors in the panel."""
        def run(*args: Any) -> None:
            if self._syncing:
                return
            self.errors.value = ""
            for rule in self.rules.values():
                rule.value = ""
            try:
                fn(*args)
            except Refused as exc:  # a configuration that cannot exist
                self._show_rule(row, f"{exc.label}: {exc.rule}")
                self._refresh()
            except Exception as exc:  # noqa: BLE001 - shown in the panel, kept in .error
                self.error = exc
                self.errors.value = ('<div style="color:#b71c1c"><b>error</b> '
                                     f"({html.escape(type(exc).__name__)}): "
                                     f"{html.escape(str(exc))}</div>")
                self._sync_controls()
        return run

    def _show_rule(self, row: str, text: str) -> None:
        self.rules[row].value = (f'<span style="color:#b71c1c">refused: '
                                 f"{html.escape(text, quote=False)}</span>")

    def _act(self, row: str, fn: Callable[[Session], Step | None]) -> None:
        t0 = time.perf_counter()
        refusals = []
        for lane in self.lanes:
            try:
                step = fn(lane.session)
            except Refused as exc:
                lane.refused(exc)
                refusals.append(f"{lane.session.era}: {exc.rule}"
                                + (f" ({exc.reason})" if exc.reason else ""))
                continue
            if step is not None:
                lane.stepped(step)
        if refusals:
            self._show_rule(row, "; ".join(refusals) if len(self.lanes) > 1 else
                            refusals[0].split(": ", 1)[1])
        self._refresh(t0)

    def _on_switch(self, reg: str, name: str, change: dict[str, Any]) -> None:
        self._act(reg, lambda s: s.toggle(reg, name))

    def _on_smm(self, change: dict[str, Any]) -> None:
        self._act("modes", methodcaller("smi" if change["new"] else "rsm"))

    def _on_l2(self, change: dict[str, Any]) -> None:
        self._act("modes", methodcaller("enter_l2" if change["new"] else "leave_l2"))

    def _on_era(self, index: int, change: dict[str, Any]) -> None:
        self._reconfigure(lanes=[self.lanes[index]], kernel=change["new"])

    def _reconfigure(self, lanes: list[Lane] | None = None, **changes: Any) -> None:
        t0 = time.perf_counter()
        for lane in lanes or self.lanes:
            before = lane.session.state
            skipped = lane.session.reconfigure(**changes)
            c = lane.session.config
            mode = {"none": "shadow paging", "ept": "EPT", "npt": "NPT"}[c.tdp]
            text = (f"Now {lane.session.era} with {mode}: replayed "
                    f"{len(lane.session.user_steps)} steps")
            if skipped:
                text += f", left out {len(skipped)} it refuses ({skipped[0]})"
            lane.moved(text + ".", before)
        self._refresh(t0)

    def _undo(self) -> None:
        t0 = time.perf_counter()
        for lane in self.lanes:
            before = lane.session.state
            step = lane.session.undo()
            lane.moved(f"Undo: took back '{step.label}'." if step else "Nothing to undo.",
                       before)
        self._refresh(t0)

    def _reset(self) -> None:
        t0 = time.perf_counter()
        for lane in self.lanes:
            before = lane.session.state
            lane.session.reset()
            lane.moved("Reset: back to the state after KVM_SET_SREGS and the first VM entry.",
                       before)
        self._refresh(t0)

    # ------------------------------------------------------------------ redrawing
    def _refresh(self, t0: float | None = None) -> None:
        start = time.perf_counter() if t0 is None else t0
        t_dot = time.perf_counter()
        dots: dict[str, str] = {}
        one = len(self.lanes) == 1
        for lane in self.lanes:
            views = session_dots(lane.session, lane.prev_state, lane.cause)
            for name in (VIEWS if one else COMPARE_VIEWS):
                dots[name if one else f"{lane.key}/{name}"] = views[name]
        t_render = time.perf_counter()
        rendered = self.views.update(dots)
        self._show_texts()
        self._sync_controls()
        end = time.perf_counter()
        self.timing = {"total_ms": (end - start) * 1000, "dot_ms": (t_render - t_dot) * 1000,
                       "render_ms": self.views.last_render_ms, "rendered": rendered,
                       "dots": {k: dots[k] for k in rendered}}

    def _show_texts(self) -> None:
        lines = []
        for lane in self.lanes:
            era = f"<b>{html.escape(lane.session.era)}</b>: " if len(self.lanes) > 1 else ""
            detail = (f'<br><span style="color:#607d8b;font-size:smaller">simulator: '
                      f"{html.escape(lane.detail, quote=False)}</span>") if lane.detail else ""
            lines.append(f'<div class="mmulib-what-line" data-era="{lane.session.era}">{era}'
                         f"{html.escape(lane.what, quote=False)}{detail}</div>")
        self.what.value = "<b>What just happened</b>" + "".join(lines)
        columns = [(lane.session.era, lane.session.counters()) for lane in self.lanes]
        self.costs.value = counters_html(columns, "costs so far" if len(columns) == 1 else
                                         "costs so far, side by side")
        m = self.lanes[-1].session.machine
        eras = " vs ".join(lane.session.era for lane in self.lanes)
        self.header.value = (f"<b>mmulib control panel</b>: KVM x86 MMU, {html.escape(eras)}, "
                             f"{m.host.tdp.upper() if m.tdp_enabled else 'shadow paging'}"
                             + (" with the TDP MMU" if m.tdp_mmu else ""))

    def _sync_controls(self) -> None:
        """Set every control to the state of the panel's (last) session, without callbacks."""
        s = self.lanes[-1].session
        m = s.machine
        self._syncing = True
        try:
            with self.hold_sync():
                for key, w in self.switches.items():
                    reg, name = key.split(".")
                    w.value = s.bit(reg, name)
                for lane, w in zip(self.lanes, self.eras):
                    w.value = lane.session.era
                self.tdp.value = s.config.tdp
                self.tdp_mmu.value = m.tdp_mmu
                self.tdp_mmu.disabled = not m.tdp_enabled or not m.era.has_tdp_mmu
                self.vendor.value = m.vendor
                self.vendor.disabled = m.tdp_enabled
                self.smm.value = m.smm
                self.l2.value = m.nested is not None
                self.nested_paging.value = s.config.nested_paging
                self.nested_paging.description = (
                    "nested EPT" if m.vendor == "vmx" else "nested NPT")
                self.nested_paging.disabled = m.nested is not None or not m.tdp_enabled
        finally:
            self._syncing = False

    # ------------------------------------------------------------------ for tests and notebooks
    def switch(self, name: str) -> widgets.ToggleButton:
        """The switch labelled ``name`` (``"CR0.WP"``)."""
        return self.switches[name]

    def svg(self, view: str) -> str:
        """The HTML (SVG) a view shows now (``"roles"``, or ``"b/roles"`` in a comparison)."""
        return self.views[view].value

    @property
    def sessions(self) -> list[Session]:
        return [lane.session for lane in self.lanes]


class EraComparison(Panel):
    """The same clicks applied to two releases, side by side, costs in one table."""

    def __init__(self, kernels: tuple[str, str] = ("5.17", "6.4"), tdp: str = "ept",
                 **kw: Any) -> None:
        old, new = (resolve(k).name for k in kernels)
        super().__init__(kernel=new, tdp=tdp, compare=old, **kw)
