"""What a role computation is asked: vCPU registers, MMU configuration, host inputs.

One :class:`Request` describes one vCPU state and one MMU configuration.  Its
field names are the JSON keys of ``mmulib roles --batch`` and, with dashes,
the CLI flags.  Host/vendor inputs that change role words are explicit, with
defaults that describe a common modern host:

* ``ept_ad`` (True): L0 uses EPT accessed/dirty bits (``enable_ept_ad_bits``);
  with it off, ``shadow_accessed_mask`` is 0 and TDP roles get ``ad_disabled``.
* ``max_tdp_level`` (4): the deepest EPT the CPU supports (5 with 5-level EPT).
* ``maxphyaddr`` (48): guest MAXPHYADDR from CPUID 0x80000008; a 5-level EPT
  host still uses 4-level EPT for guests with MAXPHYADDR <= 48.
* ``host_la57`` (False): the host runs with 5-level paging, so NPT is 5-level.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["Request", "RequestError", "TDP_MODES", "NESTED_MODES", "CONTEXTS", "parse_int"]

TDP_MODES = ("none", "ept", "npt")
NESTED_MODES = (None, "ept", "npt")
CONTEXTS = (None, "nested_mmu")


class RequestError(ValueError):
    """A request that names an unknown option or gives a value of the wrong kind."""


def parse_int(value: Any, name: str) -> int:
    """Accept ints and decimal or ``0x`` hex strings; reject everything else clearly."""
    if isinstance(value, bool):
        raise RequestError(f"{name}: expected a number, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise RequestError(f"{name}: {value} is negative")
        return value
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            out = int(text, 0)
        except ValueError:
            raise RequestError(
                f"{name}: {value!r} is not a number (use decimal or 0x-prefixed hex)"
            ) from None
        if out < 0:
            raise RequestError(f"{name}: {value!r} is negative")
        return out
    raise RequestError(f"{name}: expected a number, got {value!r}")


def _parse_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "0", "1", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise RequestError(f"{name}: expected true or false, got {value!r}")


@dataclass(frozen=True)
class Request:
    """One role question: which roles does ``kernel`` compute for this state?"""

    kernel: str
    tdp: str
    cr0: int
    cr4: int
    efer: int
    cr3: int = 0
    smm: bool = False
    # None: as the kernel's own flow has it at the init call (False for L1,
    # True for nested EPT and the nested_mmu walker, for nested NPT False
    # before 6.14 and True from 6.14).
    guest_mode: bool | None = None
    tdp_mmu: bool | None = None  # None: the era's default (off before 5.15)
    ept_ad: bool = True
    max_tdp_level: int = 4
    maxphyaddr: int = 48
    host_la57: bool = False
    nested: str | None = None  # "ept"/"npt": report guest_mmu (shadows L1's EPT/NPT)
    nested_ept_level: int = 4
    execonly: bool = False
    nested_ept_ad: bool = True
    context: str | None = None  # "nested_mmu": report the L2 walker
    nested_cr3: int = 0  # EPTP / nCR3 that guest_mmu's root shadows
    # 5.10 reads the live vCPU (L2) registers when computing the nested-NPT
    # role; these default to cr0/cr4/efer (L1's values).
    l2_cr0: int | None = None
    l2_cr4: int | None = None
    l2_efer: int | None = None

    def __post_init__(self) -> None:
        if self.tdp not in TDP_MODES:
            raise RequestError(f"tdp: {self.tdp!r} is not one of {', '.join(TDP_MODES)}")
        if self.nested not in NESTED_MODES:
            raise RequestError(f"nested: {self.nested!r} is not one of null, ept, npt")
        if self.context not in CONTEXTS:
            raise RequestError(f"context: {self.context!r} is not null or 'nested_mmu'")
        if self.nested == "ept" and self.tdp != "ept":
            raise RequestError("nested: 'ept' needs tdp 'ept' (nested EPT is shadowed by L0 EPT)")
        if self.nested == "npt" and self.tdp != "npt":
            raise RequestError("nested: 'npt' needs tdp 'npt' (nested NPT is shadowed by L0 NPT)")
        if self.nested is not None and self.context is not None:
            raise RequestError("give either nested (guest_mmu) or context nested_mmu, not both")
        if self.context == "nested_mmu" and self.tdp == "none":
            raise RequestError("context nested_mmu exists only with TDP (L1 uses EPT/NPT for L2)")
        if self.max_tdp_level not in (4, 5):
            raise RequestError(f"max_tdp_level: {self.max_tdp_level} is not 4 or 5")
        if self.nested_ept_level not in (4, 5):
            raise RequestError(f"nested_ept_level: {self.nested_ept_level} is not 4 or 5")
        if not 1 <= self.maxphyaddr <= 52:
            raise RequestError(f"maxphyaddr: {self.maxphyaddr} is outside 1..52")
        for name in ("cr0", "cr4", "efer", "cr3", "nested_cr3"):
            if getattr(self, name) >> 64:
                raise RequestError(f"{name}: {getattr(self, name):#x} does not fit in 64 bits")

    @property
    def l2_regs(self) -> tuple[int, int, int]:
        return (
            self.cr0 if self.l2_cr0 is None else self.l2_cr0,
            self.cr4 if self.l2_cr4 is None else self.l2_cr4,
            self.efer if self.l2_efer is None else self.l2_efer,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Request:
        """Build a request from JSON-like data (batch lines, replay scripts).

        Keys may use dashes or underscores.  Unknown keys are an error, so a
        typo such as ``"cr_0"`` is reported rather than silently ignored.
        """
        if not isinstance(data, dict):
            raise RequestError(f"a request must be a JSON object, got {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for raw_key, value in data.items():
            key = str(raw_key).replace("-", "_")
            if key not in known:
                raise RequestError(
                    f"unknown key {raw_key!r} (known: {', '.join(sorted(known))})"
                )
            kwargs[key] = value
        for required in ("kernel", "tdp", "cr0", "cr4", "efer"):
            if required not in kwargs:
                raise RequestError(f"missing required key {required!r}")
        out: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key in ("kernel",):
                out[key] = str(value)
            elif key in ("tdp", "nested", "context"):
                out[key] = None if value in (None, "", "null", "none") and key != "tdp" else value
            elif key in ("smm", "ept_ad", "host_la57", "execonly", "nested_ept_ad"):
                out[key] = _parse_bool(value, key)
            elif key in ("tdp_mmu", "guest_mode"):
                out[key] = None if value is None else _parse_bool(value, key)
            elif key in ("l2_cr0", "l2_cr4", "l2_efer"):
                out[key] = None if value is None else parse_int(value, key)
            else:
                out[key] = parse_int(value, key)
        return cls(**out)
