"""Bit layouts of KVM's role unions, release by release.

Each layout is an ordered tuple of :class:`Field` s that mirrors a C bitfield
declaration in ``arch/x86/include/asm/kvm_host.h``.  GCC packs x86 bitfields
little-endian: the first declared field takes the least significant bits, so
a field's offset is the sum of the widths declared before it.  Unnamed padding
is kept as a field whose name starts with ``_`` so that offsets come out right
and so that a decoder can report stray bits set in padding.

Why these bits are in a page role at all: a shadow page is looked up by
(gfn, role).  Any guest or host setting that changes how the page's contents
must be interpreted or checked (the gpte size, whether supervisor writes
honour the R/W bit, NX, SMM address space, ...) has to be a role bit, or two
incompatible uses of one guest table would share a shadow page.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Field",
    "Layout",
    "LayoutError",
    "PAGE_ROLE_4_18",
    "PAGE_ROLE_5_10",
    "PAGE_ROLE_5_15",
    "PAGE_ROLE_5_17",
    "PAGE_ROLE_5_19",
    "PAGE_ROLE_6_14",
    "EXT_ROLE_4_20",
    "EXT_ROLE_5_10",
    "EXT_ROLE_5_15",
    "EXT_ROLE_5_19",
]


class LayoutError(ValueError):
    """A field name or value that the layout of this release cannot hold."""


@dataclass(frozen=True)
class Field:
    """One member of a C bitfield: ``name`` at bit ``offset``, ``width`` bits wide."""

    name: str
    offset: int
    width: int

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.offset

    @property
    def is_padding(self) -> bool:
        return self.name.startswith("_")

    @property
    def bits(self) -> str:
        """Bit range as printed in tables: ``"4"`` or ``"24-31"``."""
        hi = self.offset + self.width - 1
        return str(self.offset) if hi == self.offset else f"{self.offset}-{hi}"


class Layout:
    """An ordered bitfield layout of one C union (``kvm_mmu_page_role`` etc.)."""

    def __init__(self, c_name: str, size_bits: int, spec: tuple[tuple[str, int], ...]):
        self.c_name = c_name
        self.size_bits = size_bits
        fields: list[Field] = []
        offset = 0
        for name, width in spec:
            fields.append(Field(name, offset, width))
            offset += width
        if offset > size_bits:
            raise LayoutError(f"{c_name}: {offset} bits do not fit in {size_bits}")
        self.fields: tuple[Field, ...] = tuple(fields)
        self.used_bits = offset
        self._by_name = {f.name: f for f in fields if not f.is_padding}
        self._spec = {f.name: (f.offset, f.width, f.mask) for f in fields if not f.is_padding}

    def __repr__(self) -> str:
        return f"Layout({self.c_name!r}, {[f.name for f in self.named_fields]})"

    @property
    def named_fields(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if not f.is_padding)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.named_fields)

    @property
    def word_mask(self) -> int:
        """Bits that belong to a named field (padding and unused bits excluded)."""
        m = 0
        for f in self.named_fields:
            m |= f.mask
        return m

    def field(self, name: str) -> Field:
        try:
            return self._by_name[name]
        except KeyError:
            raise LayoutError(
                f"{self.c_name} has no field {name!r} in this release "
                f"(fields: {', '.join(self.names)})"
            ) from None

    def has(self, name: str) -> bool:
        return name in self._by_name

    def pack(self, **values: int) -> int:
        """Pack named field values into a word; unknown names and overflows raise."""
        word = 0
        spec = self._spec
        for name, value in values.items():
            if name not in spec:
                self.field(name)  # raises LayoutError naming the known fields
            offset, width, _ = spec[name]
            v = int(value)
            if v < 0 or v >> width:
                raise LayoutError(
                    f"{self.c_name}.{name} is {width} bit(s) wide; {v} does not fit"
                )
            word |= v << offset
        return word

    def get(self, word: int, name: str) -> int:
        if name not in self._spec:
            self.field(name)
        offset, width, _ = self._spec[name]
        return (word >> offset) & ((1 << width) - 1)

    def set(self, word: int, **values: int) -> int:
        """Return ``word`` with the named fields replaced."""
        spec = self._spec
        for name in values:
            if name not in spec:
                self.field(name)
            word &= ~spec[name][2]
        return word | self.pack(**values)

    def unpack(self, word: int) -> dict[str, int]:
        """All named fields of ``word`` in declaration order."""
        return {f.name: (word >> f.offset) & ((1 << f.width) - 1) for f in self.named_fields}

    def check_word(self, word: int) -> None:
        """Reject words that do not fit the union or set bits outside any named field."""
        if word < 0 or word >> self.size_bits:
            raise LayoutError(
                f"{word:#x} does not fit in {self.c_name} ({self.size_bits} bits)"
            )
        stray = word & ~self.word_mask
        if stray:
            raise LayoutError(
                f"{word:#x} sets bit(s) {stray:#x} that are padding or unused in "
                f"{self.c_name} of this release"
            )


def _page(bit4: str, bit12: str, *extra: str) -> tuple[tuple[str, int], ...]:
    pad = 6 - len(extra)
    return (
        ("level", 4),
        (bit4, 1),
        ("quadrant", 2),
        ("direct", 1),
        ("access", 3),
        ("invalid", 1),
        (bit12, 1),
        ("cr0_wp", 1),
        ("smep_andnot_wp", 1),
        ("smap_andnot_wp", 1),
        ("ad_disabled", 1),
        ("guest_mode", 1),
        *((name, 1) for name in extra),
        ("_pad", pad),
        ("smm", 8),
    )


# union kvm_mmu_page_role, kvm_host.h.  4.18-4.20: bit 4 is cr4_pae, bit 12 nxe.
PAGE_ROLE_4_18 = Layout("kvm_mmu_page_role", 32, _page("cr4_pae", "nxe"))
# 5.10: bit 4 renamed gpte_is_8_bytes (same sense: 1 = 8-byte gptes).
PAGE_ROLE_5_10 = Layout("kvm_mmu_page_role", 32, _page("gpte_is_8_bytes", "nxe"))
# 5.15 (after the 5.14 cleanup): nxe renamed efer_nx.
PAGE_ROLE_5_15 = Layout("kvm_mmu_page_role", 32, _page("gpte_is_8_bytes", "efer_nx"))
# 5.17: has_4_byte_gpte, the inverse of gpte_is_8_bytes.
PAGE_ROLE_5_17 = Layout("kvm_mmu_page_role", 32, _page("has_4_byte_gpte", "efer_nx"))
# 5.19: passthrough at bit 18.
PAGE_ROLE_5_19 = Layout(
    "kvm_mmu_page_role", 32, _page("has_4_byte_gpte", "efer_nx", "passthrough")
)
# 6.14: is_mirror at bit 19 (TDX mirror roots).
PAGE_ROLE_6_14 = Layout(
    "kvm_mmu_page_role", 32, _page("has_4_byte_gpte", "efer_nx", "passthrough", "is_mirror")
)

# union kvm_mmu_extended_role, kvm_host.h (added in 4.20).
EXT_ROLE_4_20 = Layout(
    "kvm_mmu_extended_role",
    32,
    tuple((n, 1) for n in (
        "valid", "execonly", "cr0_pg", "cr4_pse", "cr4_pke", "cr4_smap", "cr4_smep",
        "cr4_la57",
    )),
)
EXT_ROLE_5_10 = Layout(
    "kvm_mmu_extended_role",
    32,
    (*((n, 1) for n in (
        "valid", "execonly", "cr0_pg", "cr4_pae", "cr4_pse", "cr4_pke", "cr4_smap",
        "cr4_smep",
    )), ("maxphyaddr", 6)),
)
EXT_ROLE_5_15 = Layout(
    "kvm_mmu_extended_role",
    32,
    tuple((n, 1) for n in (
        "valid", "execonly", "cr0_pg", "cr4_pae", "cr4_pse", "cr4_pke", "cr4_smap",
        "cr4_smep", "cr4_la57", "efer_lma",
    )),
)
EXT_ROLE_5_19 = Layout(
    "kvm_mmu_extended_role",
    32,
    tuple((n, 1) for n in (
        "valid", "execonly", "cr4_pse", "cr4_pke", "cr4_smap", "cr4_smep", "cr4_la57",
        "efer_lma",
    )),
)
