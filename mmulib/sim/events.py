"""The simulator's event log: records named after the kernel functions that ran.

Every record is an immutable :class:`Event` with a ``name`` (a kernel
function or tracepoint, e.g. ``kvm_mmu_get_page``, ``kvm_mmu_reset_context``,
``kvm_mmu_free_roots``, ``fast_pgd_switch``) and a few fields.  ``to_json``
gives the flat dict the replay command prints, e.g.::

    {"event": "kvm_mmu_get_page", "gfn": 258, "role": 14084, "level": 4, "created": true}

Records for ``kvm_mmu_get_page`` carry exactly the tracepoint's information
(gfn, role word, created), so a model log can be put next to a real trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Event", "ev"]


@dataclass(frozen=True)
class Event:
    name: str
    fields: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        for k, v in self.fields:
            if k == key:
                return v
        return default

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.name}
        for k, v in self.fields:
            out[k] = list(v) if isinstance(v, tuple) else v
        return out

    def __str__(self) -> str:
        body = " ".join(f"{k}={_fmt(k, v)}" for k, v in self.fields)
        return f"{self.name} {body}".rstrip()


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, int) and key in ("role", "gfn", "pgd", "mask", "value", "cr0", "cr3",
                                           "cr4", "efer"):
        return hex(value)
    return str(value)


def ev(name: str, **fields: Any) -> Event:
    """Build an event; field order is kept as given."""
    return Event(name, tuple(fields.items()))
