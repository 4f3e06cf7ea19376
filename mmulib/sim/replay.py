"""Replay scripts: a JSON list of operations run through the simulator.

Script format (numbers as int or hex strings)::

    {"kernel": "6.18", "tdp": "none" | "ept" | "npt", "tdp_mmu": true,
     "sregs": {"cr0": "0x80010011", "cr4": "0x20", "efer": "0x500", "cr3": "0x102000"},
     "ops": [{"op": "run"}, {"op": "mov_cr0", "value": "0x80000011"}, ...]}

Optional top-level keys: ``vendor`` ("vmx"/"svm"; default from ``tdp``),
``cr0_wp_backport`` ("none", "no_unload", "full": the 6.4 CR0.WP fix backported),
``ept_ad``, ``max_tdp_level``, ``host_la57``, ``maxphyaddr``,
``footprint_gib`` (guest memory mapped by a TDP tree, for teardown counts).
``vcpus`` (default 1) makes a VM of several vCPUs sharing shadow pages and
TDP MMU roots; each op may name its ``vcpu``.  ``sregs`` is applied with
``KVM_SET_SREGS`` to every vCPU before the first op.  The whole
script is validated and run before anything is reported: an invalid op
raises :class:`ReplayError` naming its index and the rule, and no partial
result is returned.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..eras import UnknownReleaseError, resolve
from ..layouts import LayoutError
from ..regs import InvalidStateError, check_state
from ..request import RequestError, parse_int
from . import Runner, counters_of
from .events import Event
from .machine import Machine, SimError, _root_str
from .ops import Op, parse_op

__all__ = ["ReplayError", "ReplayResult", "load_script", "run_script", "summary", "final_state"]

_TOP = {"kernel", "tdp", "tdp_mmu", "vendor", "sregs", "ops", "ept_ad", "max_tdp_level",
        "host_la57", "maxphyaddr", "footprint_gib", "cr0_wp_backport", "vcpus", "name",
        "description"}


class ReplayError(ValueError):
    """An invalid script or an operation impossible in its state."""


@dataclass(frozen=True)
class ReplayResult:
    kernel: str
    era: str
    ops: tuple[Op, ...]
    per_op: tuple[tuple[Event, ...], ...]
    final: dict[str, Any]

    @property
    def events(self) -> list[Event]:
        return [e for evs in self.per_op for e in evs]

    def to_json(self) -> dict[str, Any]:
        events: list[dict[str, Any]] = []
        for i, (op, evs) in enumerate(zip(self.ops, self.per_op)):
            events.append({"event": "op", "index": i, **op.to_json(),
                           "summary": summary(op, evs)})
            events.extend(e.to_json() for e in evs)
        return {"kernel": self.kernel, "era": self.era, "events": events, "final": self.final}


def load_script(path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ReplayError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReplayError(f"{path}: not JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ReplayError(f"{path}: a script is a JSON object with 'ops'")
    return data


def _machine_kwargs(script: dict[str, Any]) -> dict[str, Any]:
    kw: dict[str, Any] = {"tdp": script.get("tdp", "ept")}
    for key in ("tdp_mmu", "ept_ad", "host_la57"):
        if key in script and script[key] is not None:
            if not isinstance(script[key], bool):
                raise ReplayError(f"{key}: must be true or false, not {script[key]!r}")
            kw[key] = script[key]
    if script.get("vendor") is not None:
        if script["vendor"] not in ("vmx", "svm"):
            raise ReplayError(f"vendor: {script['vendor']!r} is not 'vmx' or 'svm'")
        kw["vendor"] = script["vendor"]
    if script.get("cr0_wp_backport") is not None:
        kw["cr0_wp_backport"] = script["cr0_wp_backport"]
    for key in ("max_tdp_level", "maxphyaddr"):
        if key in script:
            kw[key] = parse_int(script[key], key)
    if "footprint_gib" in script:
        fp = script["footprint_gib"]
        if not isinstance(fp, (int, float)) or isinstance(fp, bool) or fp < 0:
            raise ReplayError(f"footprint_gib: {fp!r} is not a non-negative number")
        kw["footprint_gib"] = float(fp)
    return kw


def run_script(script: dict[str, Any], kernel: str | None = None) -> ReplayResult:
    """Validate and run a whole script; raise :class:`ReplayError` on the first problem."""
    try:
        unknown = set(script) - _TOP
        if unknown:
            raise ReplayError(f"unknown top-level key(s): {', '.join(sorted(unknown))}")
        kernel = kernel or script.get("kernel")
        if not kernel:
            raise ReplayError("no kernel: give \"kernel\" in the script or --kernel")
        era = resolve(str(kernel))
        ops_data = script.get("ops")
        if not isinstance(ops_data, list) or not ops_data:
            raise ReplayError("'ops' must be a non-empty list")
        ops = tuple(parse_op(o, i) for i, o in enumerate(ops_data))
        vcpus = parse_int(script.get("vcpus", 1), "vcpus")
        if not 1 <= vcpus <= 64:
            raise ReplayError(f"vcpus: {vcpus} is not between 1 and 64")
        for i, op in enumerate(ops):
            if op.get("vcpu", 0) >= vcpus:
                raise ReplayError(f"op {i} ({op.name}): vcpu {op.get('vcpu')} but the VM has "
                                  f"{vcpus} vCPU(s)")
        runner = Runner(str(kernel), vcpus=vcpus, **_machine_kwargs(script))
        sregs = script.get("sregs")
        if sregs is not None:
            if not isinstance(sregs, dict) or set(sregs) - {"cr0", "cr3", "cr4", "efer"}:
                raise ReplayError("sregs: an object with cr0, cr3, cr4, efer")
            m = runner.machine()
            vals = {k: parse_int(sregs[k], f"sregs.{k}") if k in sregs else getattr(m, k)
                    for k in ("cr0", "cr3", "cr4", "efer")}
            try:
                check_state(vals["cr0"], vals["cr4"], vals["efer"], cr3=vals["cr3"],
                            maxphyaddr=m.maxphyaddr)
            except InvalidStateError as exc:
                raise ReplayError(f"sregs: {exc}") from None
            for v in range(vcpus):
                runner.set_sregs(**vals, vcpu=v)
    except (RequestError, UnknownReleaseError, SimError, LayoutError) as exc:
        raise ReplayError(str(exc)) from None
    per_op = []
    for i, op in enumerate(ops):
        try:
            per_op.append(runner.apply(op))
        except (InvalidStateError, SimError, RequestError) as exc:
            raise ReplayError(f"op {i} ({op.name}): {exc}") from None
    machines = runner.machines()
    final = final_state(machines[0])
    if len(machines) > 1:
        final["vcpus"] = [final_state(m) for m in machines]
    return ReplayResult(str(kernel), era.name, ops, tuple(per_op), final)


def final_state(m: Machine) -> dict[str, Any]:
    """The machine at the end: registers, contexts (roles, root, prev_roots), pages."""
    p = m.era.page
    ctxs = {}
    for name, c in m.ctx.items():
        r = c.roles
        ctxs[name] = {
            m.era.cpu_side_name: {"base": r.base, "ext": r.ext, "as_u64": r.as_u64},
            "root_role": r.root_role if m.era.has_cpu_role else None,
            "root": _root_str(c.root),
            "prev_roots": [_root_str(x) + (f" pgd={x.pgd:#x}" if x.valid else "")
                           for x in c.prev],
        }
    return {
        "cr0": m.cr0, "cr3": m.cr3, "cr4": m.cr4, "efer": m.efer, "smm": m.smm,
        "guest_mode": m.guest_mode, "mmu": m.mmu, "walk_mmu": m.walk, "contexts": ctxs,
        "shadow_pages": len(m.sp),
        "tdp_mmu_roots": [{"role": k.role, "refcount": n, "invalid": inv,
                           "level": p.get(k.role, "level")} for k, n, inv in m.tdp_roots],
    }


def summary(op: Op, events: tuple[Event, ...]) -> str:
    """One sentence a reader can follow: what the op made KVM do."""
    c = counters_of(events)
    parts: list[str] = []
    names = [e.name for e in events]
    if "no_exit" in names:
        parts.append(next(e.get("why") for e in events if e.name == "no_exit"))
    resets = [e for e in events if e.name == "kvm_mmu_reset_context"]
    for e in resets:
        parts.append(f"{e.get('caller')} reset the MMU ({e.get('why')})")
    post = [e for e in events if e.name == "kvm_post_set_cr0"]
    for e in post:
        parts.append(f"kvm_post_set_cr0: {e.get('why')}")
    for e in events:
        if e.name == "fast_pgd_switch":
            slot = e.get("slot")
            if e.get("hit"):
                where = "the current root" if slot == "current" else f"prev_roots[{slot}]"
                parts.append(f"fast_pgd_switch hit {where}")
            else:
                why = e.get("why")
                parts.append("fast_pgd_switch missed" + (f": {why}" if why else ""))
    if c["roots_freed"]:
        parts.append(f"{c['roots_freed']} root(s) freed")
    if c["pt_pages_torn_down"]:
        parts.append(f"{c['pt_pages_torn_down']} TDP page-table pages torn down")
    made = c["root_pages_created"] + c["tdp_roots_allocated"]
    if made:
        parts.append(f"{made} root page(s) created at VM entry")
    if c["root_pages_reused"] or c["tdp_roots_reused"]:
        parts.append(f"{c['root_pages_reused'] + c['tdp_roots_reused']} root page(s) found again")
    if not parts:
        parts.append("no MMU work")
    text = "; ".join(parts)
    return f"{op.name}: {text}."
