"""The roles view: which cells light up, and why (the 5.19 split, 6.4's lazy CR0.WP)."""

from __future__ import annotations

import re

import pytest

from mmulib.draw import changed_inputs, role_changes, role_view, roles_dot
from mmulib.draw.roles import cause_of
from mmulib.draw.style import CHANGED, LAZY
from mmulib.eras import era_names
from mmulib.ui.session import Session


def lit(dot: str, colour: str = CHANGED) -> set[str]:
    """Ids of the value cells drawn in ``colour``."""
    return set(re.findall(rf'<TD BGCOLOR="{colour}" HREF="mmulib:cell" ID="([^"]+)"', dot))


def wp_flip(kernel: str, tdp: str = "ept") -> Session:
    s = Session(kernel, tdp=tdp)
    s.toggle("CR0", "WP")
    return s


def test_wp_flip_on_6_4_with_ept_lights_cpu_role_only_and_marks_it_lazy() -> None:
    s = wp_flip("6.4")
    dot = roles_dot(s.machine, s.prev_machine)
    assert lit(dot) == {"cpu_role.base.cr0_wp"}
    assert "CR0.WP (was 1)" in dot
    assert ">0 lazy</TD>" in dot and "kvm_mmu_refresh_passthrough_bits" in dot
    view = role_view(s.machine)
    assert view.lazy_wp == 1  # what KVM has stored until the next permission check
    assert view.root.values()["cr0_wp"] == 1  # root_role keeps cr0_wp forced to 1


def test_wp_flip_on_5_17_with_ept_lights_both_sides() -> None:
    s = wp_flip("5.17")
    dot = roles_dot(s.machine, s.prev_machine)
    assert lit(dot) == {"mmu_role.base.cr0_wp", "root_page_role.cr0_wp"}
    assert lit(dot, LAZY) == set()
    changes = role_changes(role_view(s.prev_machine), role_view(s.machine))
    assert [(c.union, c.name, c.old, c.new) for c in changes] == [
        ("mmu_role.base", "cr0_wp", 1, 0), ("root_page_role", "cr0_wp", 1, 0)]


def test_wp_flip_on_6_4_with_npt_changes_the_stored_cpu_role() -> None:
    s = wp_flip("6.4", "npt")  # SVM: the write exits; kvm_post_set_cr0 runs kvm_init_mmu
    dot = roles_dot(s.machine, s.prev_machine)
    assert lit(dot) == {"cpu_role.base.cr0_wp"}
    assert role_view(s.machine).lazy_wp is None


@pytest.mark.parametrize("era", era_names())
def test_wp_flip_under_ept_splits_at_5_19(era: str) -> None:
    s = wp_flip(era)
    changes = role_changes(role_view(s.prev_machine), role_view(s.machine))
    root_side = {c.name for c in changes if c.union.startswith("root")}
    cpu_side = {c.name for c in changes if not c.union.startswith("root")}
    if s.machine.era.version >= (4, 20):  # 4.18/4.19 TDP roles do not carry WP
        assert "cr0_wp" in cpu_side
    if s.machine.era.has_cpu_role:
        assert root_side == set(), era
    elif cpu_side:
        assert root_side == {"cr0_wp"}, era


def test_no_highlight_without_a_previous_state_or_across_eras() -> None:
    s = Session("6.4")
    assert lit(roles_dot(s.machine)) == set()
    other = Session("5.17").machine
    assert lit(roles_dot(s.machine, other)) == set()


def test_pre_5_19_root_side_shows_the_fields_beside_the_role() -> None:
    view = role_view(Session("5.10").machine)
    assert [n for n, _ in view.root.extra] == ["root_level", "shadow_root_level", "direct_map",
                                               "ept_ad", "nx", "last_nonleaf_level"]
    assert [n for n, _ in role_view(Session("5.17").machine).root.extra] == [
        "root_level", "shadow_root_level", "direct_map", "ept_ad"]
    assert role_view(Session("5.19").machine).root.extra == ()


def test_rows_follow_kernel_field_order_with_padding() -> None:
    dot = roles_dot(Session("6.4").machine)
    fields = re.findall(r'ID="cpu_role\.base\.([a-z0-9_]+)"', dot)
    assert fields == ["level", "has_4_byte_gpte", "quadrant", "direct", "access", "invalid",
                      "efer_nx", "cr0_wp", "smep_andnot_wp", "smap_andnot_wp", "ad_disabled",
                      "guest_mode", "passthrough", "smm"]
    assert dot.count("(pad)") == 2  # bits 19-23 of cpu_role.base and of root_role


def test_smi_names_smm_as_the_cause() -> None:
    s = Session("6.4", tdp="npt")
    s.smi()
    dot = roles_dot(s.machine, s.prev_machine, cause="SMI")
    assert "cpu_role.base.smm" in lit(dot) and "root_role.smm" in lit(dot)
    assert "SMM (was 0)" in dot


def test_changed_inputs_and_causes() -> None:
    s = Session("6.4", tdp="npt")
    s.smi()
    inputs = changed_inputs(s.prev_machine, s.machine)
    assert inputs[:2] == ("CR0.PE", "CR0.PG") and "SMM" in inputs and "EFER.LMA" in inputs
    assert cause_of("level", inputs) == "CR0.PG, CR4.PAE, EFER.LMA, EFER.LME"
    assert cause_of("invalid", (), "CPUID update") == "CPUID update"
    assert cause_of("guest_mode", ("mmu -> guest_mmu",)) == "mmu -> guest_mmu"
