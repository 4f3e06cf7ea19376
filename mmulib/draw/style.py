"""Colours and fonts shared by every view (one place, so the views agree).

Yellow marks what the last step changed, green a cache hit or the active
context, red what was freed, grey what is invalid or unused.
"""

from __future__ import annotations

__all__ = ["FONT", "MONO", "CHANGED", "HIT", "FREED", "ACTIVE", "ACTIVE_FILL", "INVALID",
           "MUTED", "HEADER", "PAD", "LAZY", "CELL_HREF"]

FONT = "Helvetica"
MONO = "Courier"
CHANGED = "#ffd54f"      # a field or slot the last step changed
HIT = "#c8e6c9"          # the root a lookup found
FREED = "#ffcdd2"        # a root or page the last step freed
ACTIVE = "#1565c0"       # outline of vcpu->arch.mmu / walk_mmu
ACTIVE_FILL = "#e3f2fd"
INVALID = "#9e9e9e"      # INVALID_PAGE, padding, unreferenced pages
MUTED = "#f5f5f5"
HEADER = "#eceff1"
PAD = "#fafafa"
LAZY = "#ffe0b2"         # 6.4+ CR0.WP copied in lazily (kvm_mmu_refresh_passthrough_bits)

CELL_HREF = "mmulib:cell"
"""Graphviz 2.43 writes a table cell's ``ID`` into SVG only for a cell with an ``HREF``; cells
that need an id get this placeholder, which :func:`mmulib.draw.svg.tidy_svg` removes."""
