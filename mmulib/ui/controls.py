"""Small widget builders for the control panel: switches, buttons, rule labels, rows.

Every switch is labelled with the bit's name (``CR0.WP``) and carries a
tooltip in the glossary's words; every row has a rule label beside it where
a refused change says which kernel check refused it.
"""

from __future__ import annotations

import ipywidgets as widgets

__all__ = ["SWITCHES", "TOOLTIPS", "switch", "button", "rule_label", "labelled_row",
           "switch_class"]

SWITCHES: dict[str, tuple[str, ...]] = {
    "CR0": ("PE", "PG", "WP"),
    "CR4": ("PAE", "PSE", "SMEP", "SMAP", "PKE", "LA57", "PCIDE", "PGE"),
    "EFER": ("LME", "NX"),
}
"""The register bits the panel switches, per register, in display order."""

TOOLTIPS: dict[str, str] = {
    "CR0.PE": "Protection Enable: protected mode (paging needs it)",
    "CR0.PG": "Paging: guest page tables in use; in KVM_MMU_CR0_ROLE_BITS",
    "CR0.WP": "Write Protect: supervisor writes honour read-only pages. role.cr0_wp; forced to "
              "1 in TDP root roles from 5.19; guest-owned on VMX with EPT from 6.4",
    "CR4.PAE": "Physical Address Extension: 8-byte guest PTEs; needed for long mode",
    "CR4.PSE": "Page Size Extension: 4 MiB pages in 32-bit paging (ext.cr4_pse)",
    "CR4.SMEP": "SMEP: supervisor fetches from user pages fault (ext.cr4_smep, smep_andnot_wp)",
    "CR4.SMAP": "SMAP: supervisor data accesses to user pages fault (ext.cr4_smap)",
    "CR4.PKE": "Protection keys for user pages (ext.cr4_pke, counted with EFER.LMA)",
    "CR4.LA57": "5-level guest paging (ext.cr4_la57); cannot change in long mode",
    "CR4.PCIDE": "Process-context identifiers in CR3[11:0]; needs long mode",
    "CR4.PGE": "Global pages; a role bit only in 4.18 ... 5.15",
    "EFER.LME": "Long Mode Enable; LMA follows LME and CR0.PG (long mode active)",
    "EFER.NX": "No-execute enable: role.efer_nx; forced to 1 in TDP root roles from 5.19",
}


def switch_class(register: str, name: str) -> str:
    """CSS class of a switch, for browser tests: ``mmulib-bit-CR0-WP``."""
    return f"mmulib-bit-{register}-{name}"


def switch(register: str, name: str) -> widgets.ToggleButton:
    """A toggle labelled ``CR0.WP`` (EFER.LME shows as ``EFER.LME/LMA``)."""
    key = f"{register}.{name}"
    label = "EFER.LME/LMA" if key == "EFER.LME" else key
    w = widgets.ToggleButton(value=False, description=label, tooltip=TOOLTIPS.get(key, key),
                             layout=widgets.Layout(width="auto"))
    w.add_class("mmulib-switch")
    w.add_class(switch_class(register, name))
    return w


def button(label: str, tooltip: str, css: str) -> widgets.Button:
    w = widgets.Button(description=label, tooltip=tooltip, layout=widgets.Layout(width="auto"))
    w.add_class("mmulib-button")
    w.add_class(f"mmulib-button-{css}")
    return w


def rule_label(key: str) -> widgets.HTML:
    """Where a refusal of this row's change is explained (empty otherwise)."""
    w = widgets.HTML(value="", layout=widgets.Layout(margin="0 0 0 1em"))
    w.add_class("mmulib-rule")
    w.add_class(f"mmulib-rule-{key}")
    return w


def labelled_row(title: str, items: list[widgets.Widget], rule: widgets.HTML) -> widgets.HBox:
    head = widgets.HTML(value=f"<b>{title}</b>", layout=widgets.Layout(width="5.5em"))
    return widgets.HBox([head, *items, rule],
                        layout=widgets.Layout(flex_flow="row wrap", align_items="center"))
