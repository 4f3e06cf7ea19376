"""Replay operations: parsing, validation and the transition they drive.

An operation is a small frozen value (hashable, so transitions can be
memoised).  ``parse_op`` turns one JSON object of a replay script into one;
``apply_op`` runs it on a :class:`~mmulib.sim.machine.Machine` following the
era's kernel path.  Guest operations (``mov_cr0``, ``mov_cr3``, ``mov_cr4``,
``wrmsr_efer``, ``rsm``, ``vmlaunch``/``vmrun``) are executed by the running
guest: the instruction exits to KVM, KVM handles it, and the guest is entered
again right after.  Userspace operations (``set_sregs``, ``cpuid``, ``init``,
``memslot``) happen between runs and take effect at the next ``run``.  Every
operation may name a ``vcpu`` (default 0) of a VM with several vCPUs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..request import RequestError, parse_int
from .machine import Machine, Nested, SimError

__all__ = ["Op", "OPS", "parse_op", "apply_op"]


@dataclass(frozen=True)
class Op:
    name: str
    args: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.args).get(key, default)

    def to_json(self) -> dict[str, Any]:
        return {"op": self.name, **{k: (hex(v) if isinstance(v, int) and not isinstance(v, bool)
                                        and k in _HEX else v) for k, v in self.args}}


_HEX = {"value", "cr0", "cr3", "cr4", "efer", "eptp", "ncr3"}

# op name -> (required keys, optional keys with defaults)
OPS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "run": ((), {}),
    "mov_cr0": (("value",), {}),
    "mov_cr3": (("value",), {}),
    "mov_cr4": (("value",), {}),
    "wrmsr_efer": (("value",), {}),
    "set_sregs": ((), {"cr0": None, "cr3": None, "cr4": None, "efer": None}),
    "smi": ((), {}),
    "rsm": ((), {}),
    "vmlaunch": (("cr0", "cr3", "cr4", "efer"),
                 {"ept": True, "eptp": 0x1000000, "ept_level": 4, "execonly": False, "ad": True}),
    "vmrun": (("cr0", "cr3", "cr4", "efer"), {"npt": True, "ncr3": 0x1000000}),
    "vmexit": ((), {}),
    "vmfail": ((), {}),
    "cpuid": ((), {}),
    "init": ((), {}),
    "memslot": ((), {"change": "delete"}),
}
_BOOL = {"ept", "npt", "execonly", "ad"}


def parse_op(data: Any, index: int) -> Op:
    """One script entry -> :class:`Op`; errors name the op's index and the rule."""
    where = f"op {index}"
    if not isinstance(data, dict) or "op" not in data:
        raise RequestError(f"{where}: each op is an object with an \"op\" key, got {data!r}")
    name = data["op"]
    if name not in OPS:
        raise RequestError(f"{where}: unknown op {name!r} (known: {', '.join(OPS)})")
    required, optional = OPS[name]
    unknown = set(data) - {"op", "vcpu", *required, *optional}
    if unknown:
        raise RequestError(f"{where} ({name}): unknown key(s) {', '.join(sorted(unknown))}")
    args: list[tuple[str, Any]] = []
    for key in required:
        if key not in data:
            raise RequestError(f"{where} ({name}): missing {key!r}")
    for key in (*required, *optional):
        value = data.get(key, optional.get(key))
        if value is None:
            args.append((key, None))
        elif key in _BOOL:
            if not isinstance(value, bool):
                raise RequestError(f"{where} ({name}): {key} must be true or false, not {value!r}")
            args.append((key, value))
        elif key == "change":
            if value not in ("delete", "move"):
                raise RequestError(f"{where} ({name}): change must be 'delete' or 'move'")
            args.append((key, value))
        else:
            args.append((key, parse_int(value, f"{where} ({name}) {key}")))
    if "vcpu" in data:
        vcpu = parse_int(data["vcpu"], f"{where} ({name}) vcpu")
        if vcpu:
            args.append(("vcpu", vcpu))
    if name == "vmlaunch" and dict(args)["ept_level"] not in (4, 5):
        raise RequestError(f"{where} (vmlaunch): ept_level must be 4 or 5")
    return Op(name, tuple(args))


def apply_op(m: Machine, op: Op, others: tuple[Machine, ...] = ()) -> None:
    """Run ``op`` on ``m`` (appending to ``m.log``); raise on an impossible op.

    ``others`` are the VM's other vCPUs (a memslot change reaches all of them).
    """
    a = dict(op.args)
    name = op.name
    if name == "run":
        m.vm_entry()
        return
    guest_ops = {"mov_cr0", "mov_cr3", "mov_cr4", "wrmsr_efer", "rsm", "vmlaunch", "vmrun",
                 "vmexit", "vmfail"}
    if name in guest_ops and not m.running:
        raise SimError(f"{name} is executed by the guest: it needs a 'run' first")
    if name == "mov_cr0":
        m.guest_mov_cr0(a["value"])
    elif name == "mov_cr3":
        m.guest_mov_cr3(a["value"])
    elif name == "mov_cr4":
        m.guest_mov_cr4(a["value"])
    elif name == "wrmsr_efer":
        m.guest_wrmsr_efer(a["value"])
    elif name == "rsm":
        m.rsm()
    elif name == "smi":
        m.smi()
    elif name == "vmlaunch":
        if m.vendor != "vmx":
            raise SimError("vmlaunch needs a VMX host (tdp 'ept', or vendor 'vmx')")
        m.nested_entry(Nested("vmx", a["ept"], (0, 0, 0, 0), a["eptp"], a["ept_level"],
                              a["execonly"], a["ad"]),
                       (a["cr0"], a["cr3"], a["cr4"], a["efer"]))
    elif name == "vmrun":
        if m.vendor != "svm":
            raise SimError("vmrun needs an SVM host (tdp 'npt', or vendor 'svm')")
        m.nested_entry(Nested("svm", a["npt"], (0, 0, 0, 0), a["ncr3"]),
                       (a["cr0"], a["cr3"], a["cr4"], a["efer"]))
    elif name == "vmexit":
        m.nested_exit()
    elif name == "vmfail":
        m.nested_fail()
    elif name == "set_sregs":
        from ..regs import check_state

        cr0 = m.cr0 if a["cr0"] is None else a["cr0"]
        cr3 = m.cr3 if a["cr3"] is None else a["cr3"]
        cr4 = m.cr4 if a["cr4"] is None else a["cr4"]
        efer = m.efer if a["efer"] is None else a["efer"]
        check_state(cr0, cr4, efer, cr3=cr3, maxphyaddr=m.maxphyaddr)
        m.set_sregs(cr0, cr3, cr4, efer)
        m.running = False
        return
    elif name == "cpuid":
        m.cpuid_update()
        m.running = False
        return
    elif name == "init":
        m.init_event()
        m.running = False
        return
    elif name == "memslot":
        m.memslot_change(a["change"], others)
        m.running = False
        return
    # The guest (or L2/L1 after a nested transition) is entered again.
    m.vm_entry()
