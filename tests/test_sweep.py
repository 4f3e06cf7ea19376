"""The refactoring check: what 5.18 -> 5.19 changed, state by state, and what it did not."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmulib.sweep import CONFIGS, canonical_fields, states, sweep
from mmulib.eras import resolve


def test_state_space_is_every_valid_role_relevant_combination() -> None:
    sts = list(states())
    # 4 (PG, WP) x 64 (CR4 bits) x NX x SMM x guest_mode, plus long mode (LMA) only with
    # PG=1 and PAE=1: 2 (WP) x 32 (other CR4 bits) x 2 x 2 x 2 extra states.
    assert len(sts) == 4 * 64 * 2 * 2 * 2 + 2 * 32 * 2 * 2 * 2 == 2560
    assert len(set(sts)) == len(sts)
    for cr0, cr4, efer, _, _ in sts:
        if efer & (1 << 10):
            assert cr0 & (1 << 31) and cr4 & (1 << 5) and efer & (1 << 8)


@pytest.fixture(scope="module")
def report_518_519():
    return sweep("5.18", "5.19")


def by_name(report, name):
    return next(c for c in report.configs if c.config == name)


def test_519_reinit_decisions_match_518_except_nested_ept_in_smm(report_518_519) -> None:
    r = report_518_519
    assert len(r.configs) == len(CONFIGS)
    for c in r.configs:
        if c.config.startswith("nested-ept"):
            # 5.18 copies smm from root_mmu into the shadow-EPT role; 5.19 forces 0,
            # so an SMM and a non-SMM state share one role (and one early return).
            assert not c.reinit_identical
            d = c.reinit_diffs[0]
            assert {d.state["smm"], d.other_state["smm"]} == {False, True}
        else:
            assert c.reinit_identical, c.config


def test_519_tdp_roots_force_wp_and_nx(report_518_519) -> None:
    c = by_name(report_518_519, "tdp-ept-ad1-max4-maxphy48")
    assert set(c.fields_changed) == {"cr0_wp", "efer_nx"}
    # Every state with PG=0, or WP=0, or NX=0 gets a different TDP root word:
    # 2560 states minus those with PG=1, WP=1, NX=1 (64 non-LM + 32 LM, x SMM x guest = 384).
    assert c.root_page_diffs == 2560 - 384


def test_519_shadow_roots_force_nx_only(report_518_519) -> None:
    c = by_name(report_518_519, "shadow")
    assert set(c.fields_changed) == {"efer_nx"}
    assert c.root_page_diffs == 2560 // 2 + 512  # every NX=0 state, plus PG=0 with NX=1


def test_519_nested_npt_adds_passthrough_only_on_5_level_hosts(report_518_519) -> None:
    assert by_name(report_518_519, "nested-npt-host4").root_pages_identical
    c = by_name(report_518_519, "nested-npt-host5")
    assert set(c.fields_changed) == {"passthrough"}
    # L1 in 4-level long mode (LMA=1, LA57=0): 2 (WP) x 16 (PSE SMEP SMAP PKE) x NX x SMM x gm
    assert c.root_page_diffs == 2 * 16 * 2 * 2 * 2


def test_reset_triggers_518_519_identical(report_518_519) -> None:
    assert report_518_519.triggers == {
        "CR0": {"from": "PG|WP", "to": "PG|WP"},
        "CR4": {"from": "PKE|SMAP|SMEP|LA57|PAE|PSE", "to": "PKE|SMAP|SMEP|LA57|PAE|PSE"},
        "EFER": {"from": "NX|LME", "to": "NX|LME"},
    }


def test_role_code_unchanged_from_519_to_64() -> None:
    assert sweep("5.19", "6.4").identical


def test_614_nested_npt_roles_gain_guest_mode() -> None:
    r = sweep("6.4", "6.14")
    changed = {c.config: c.fields_changed for c in r.configs if not c.root_pages_identical}
    assert changed == {"nested-npt-host4": {"guest_mode": 2560},
                       "nested-npt-host5": {"guest_mode": 2560}}


def test_canonical_fields_map_renamed_bits() -> None:
    # 5.10 gpte_is_8_bytes=1 and 5.17 has_4_byte_gpte=0 mean the same thing.
    assert canonical_fields(resolve("5.10"), 1 << 4)["gpte_is_8_bytes"] == 1
    assert canonical_fields(resolve("5.17"), 0)["gpte_is_8_bytes"] == 1
    assert canonical_fields(resolve("4.20"), 1 << 12)["efer_nx"] == 1


def test_sweep_cli_json() -> None:
    p = subprocess.run([sys.executable, "-m", "mmulib", "sweep", "--from", "5.18", "--to", "5.19",
                        "--json"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    obj = json.loads(p.stdout)
    assert obj["from"] == "5.18" and obj["to"] == "5.19" and obj["identical"] is False
    assert obj["states_per_config"] == 2560
