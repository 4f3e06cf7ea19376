"""Role words as values: ``kvm_mmu_page_role``, the extended role, and their 64-bit union.

A :class:`Role` is an immutable (layout, word) pair.  Its fields read like
the C union's members (``role.level``, ``role.cr0_wp``) and its ``word`` is the
exact integer the kernel stores and prints in the ``kvm_mmu_get_page``
tracepoint.  :class:`CpuRole` is ``union kvm_mmu_role`` (4.20-5.18) or
``union kvm_cpu_role`` (5.19+): a page role ``base`` and an extended role
``ext`` overlaid by ``as_u64 = base.word | ext.word << 32`` (x86 is
little-endian and ``base`` is the first member).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .eras import Era, resolve
from .layouts import Layout, LayoutError

__all__ = ["Role", "CpuRole", "FieldChange", "ACCESS_STR", "decode", "role_from_fields"]

# access_str[] of KVM_MMU_PAGE_PRINTK in arch/x86/kvm/mmu/mmutrace.h (all eras).
ACCESS_STR = ("---", "--x", "w--", "w-x", "-u-", "-ux", "wu-", "wux")


@dataclass(frozen=True)
class FieldChange:
    """One field that differs between two roles."""

    union: str
    name: str
    bits: str
    old: int
    new: int

    def __str__(self) -> str:
        return f"{self.union}.{self.name} {self.old}->{self.new}"


@dataclass(frozen=True)
class Role:
    """A ``kvm_mmu_page_role`` or ``kvm_mmu_extended_role`` word in one release's layout."""

    layout: Layout
    word: int

    def __post_init__(self) -> None:
        self.layout.check_word(self.word)

    def __getattr__(self, name: str) -> int:
        # Only called for names that are not regular attributes: role fields.
        if name.startswith("__"):
            raise AttributeError(name)
        layout = object.__getattribute__(self, "layout")
        if not layout.has(name):
            raise AttributeError(
                f"{layout.c_name} has no field {name!r} in this release "
                f"(fields: {', '.join(layout.names)})"
            )
        return layout.get(object.__getattribute__(self, "word"), name)

    def __repr__(self) -> str:
        return f"Role({self.layout.c_name}, {self.word:#010x})"

    @property
    def hex(self) -> str:
        return f"{self.word:#010x}"

    @property
    def fields(self) -> dict[str, int]:
        return self.layout.unpack(self.word)

    def has(self, name: str) -> bool:
        return self.layout.has(name)

    def replace(self, **values: int) -> Role:
        return Role(self.layout, self.layout.set(self.word, **values))

    def diff(self, other: Role, union: str | None = None) -> list[FieldChange]:
        """Fields whose value differs from ``other`` (self is old, other is new)."""
        if other.layout is not self.layout:
            raise LayoutError("cannot diff roles of different layouts")
        name = union or self.layout.c_name
        out = []
        for f in self.layout.named_fields:
            a, b = self.layout.get(self.word, f.name), self.layout.get(other.word, f.name)
            if a != b:
                out.append(FieldChange(name, f.name, f.bits, a, b))
        return out

    def listing(self) -> list[tuple[str, str, int]]:
        """(field, bits, value) rows in kernel declaration order, padding included."""
        rows = []
        for f in self.layout.fields:
            value = (self.word >> f.offset) & ((1 << f.width) - 1)
            rows.append(("(pad)" if f.is_padding else f.name, f.bits, value))
        return rows

    def trace_str(self, gfn: int | None = None) -> str:
        """The role part of a ``kvm_mmu_get_page`` trace line (KVM_MMU_PAGE_PRINTK).

        The kernel prints level, gpte size (``pae`` before 5.10), quadrant,
        direct, access, invalid, NX and A/D.  mmulib appends the role bits the
        tracepoint does not print (``wp``, ``smep_andnot_wp``, ``smap_andnot_wp``,
        ``guest``, ``passthrough``, ``mirror``, ``smm``) after a ``|`` so that
        the prefix stays comparable with a real trace.
        """
        f = self.fields
        parts = [] if gfn is None else [f"gfn {gfn:x}"]
        size = ""
        if "cr4_pae" in f:
            size = " pae" if f["cr4_pae"] else ""
            head = f"l{f['level']}{size}"
        elif "gpte_is_8_bytes" in f:
            head = f"l{f['level']} {8 if f['gpte_is_8_bytes'] else 4}-byte"
        else:
            head = f"l{f['level']} {4 if f['has_4_byte_gpte'] else 8}-byte"
        parts.append(head)
        parts.append(f"q{f['quadrant']}" + (" direct" if f["direct"] else ""))
        parts.append(ACCESS_STR[f["access"]] + (" invalid" if f["invalid"] else ""))
        nx = f.get("efer_nx", f.get("nxe", 0))
        parts.append(("" if nx else "!") + "nxe")
        parts.append(("!" if f["ad_disabled"] else "") + "ad")
        extra = []
        if f["cr0_wp"]:
            extra.append("wp")
        if f["smep_andnot_wp"]:
            extra.append("smep_andnot_wp")
        if f["smap_andnot_wp"]:
            extra.append("smap_andnot_wp")
        if f["guest_mode"]:
            extra.append("guest")
        if f.get("passthrough"):
            extra.append("passthrough")
        if f.get("is_mirror"):
            extra.append("mirror")
        if f["smm"]:
            extra.append(f"smm{f['smm']}" if f["smm"] != 1 else "smm")
        line = " ".join(parts)
        return line + (" | " + " ".join(extra) if extra else "")

    def to_json(self) -> dict[str, Any]:
        return {"word": self.word, "hex": self.hex, "fields": self.fields}


@dataclass(frozen=True)
class CpuRole:
    """``union kvm_mmu_role`` (4.20-5.18) / ``union kvm_cpu_role`` (5.19+).

    Before 4.20 there is no extended role; ``ext`` is then ``None`` and
    ``as_u64`` is just the base word.
    """

    base: Role
    ext: Role | None

    @property
    def as_u64(self) -> int:
        return self.base.word | ((self.ext.word if self.ext else 0) << 32)

    def __repr__(self) -> str:
        return f"CpuRole(as_u64={self.as_u64:#018x})"

    def diff(self, other: CpuRole) -> list[FieldChange]:
        out = self.base.diff(other.base, "base")
        if self.ext is not None and other.ext is not None:
            out += self.ext.diff(other.ext, "ext")
        return out

    def to_json(self) -> dict[str, Any]:
        d = self.base.to_json()
        d["ext"] = None if self.ext is None else {
            "word": self.ext.word, "hex": self.ext.hex, "fields": self.ext.fields,
        }
        d["as_u64"] = self.as_u64
        return d


def role_from_fields(layout: Layout, **fields: int) -> Role:
    return Role(layout, layout.pack(**fields))


def decode(word: int, kernel: str | Era, ext: int | None = None) -> tuple[Era, Role, Role | None]:
    """Decode a page-role word (and optionally an extended-role word) for a release.

    >>> era, role, _ = decode(0x3784, "6.4")
    >>> role.level, role.direct, role.cr0_wp, role.efer_nx
    (4, 1, 1, 1)
    """
    era = resolve(kernel)
    try:
        base = Role(era.page, word)
    except LayoutError as exc:
        raise LayoutError(f"{exc} (era {era.name})") from None
    ext_role = None
    if ext is not None:
        if era.ext is None:
            raise LayoutError(
                f"era {era.name} has no kvm_mmu_extended_role (it was added in 4.20)"
            )
        try:
            ext_role = Role(era.ext, ext)
        except LayoutError as exc:
            raise LayoutError(f"{exc} (era {era.name})") from None
    return era, base, ext_role
