"""mmulib.vector: the vectorised role computation against the kernel-computed vectors,
and against the scalar path (mmulib.compute) on a full register grid."""

from __future__ import annotations

import gzip
import itertools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmulib.eras import resolve
from mmulib.vector import BatchResult, compute_batch

DATA = Path(__file__).parent / "data" / "kernel-roles-sample.jsonl.gz"

# Vector release -> the era that models it.
RELEASE_ERA = {
    "4.20": "4.20", "5.10": "5.10", "5.17-rc5": "5.17", "5.18.12": "5.18", "5.19": "5.19",
    "6.4.0": "6.4", "6.6.47": "6.4", "6.14": "6.14", "6.19": "6.18", "7.1.5": "6.18",
}

# Extra fields that must be checked wherever a vector row has them.
REQUIRED_EXTRAS = ("root_level", "shadow_root_level", "direct_map", "ept_ad",
                   "calc_root_page_role")


def config_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """compute_batch arguments for one vector configuration (kinds a-f)."""
    kind = cfg["kind"]
    kw: dict[str, Any] = {"maxphyaddr": cfg.get("guest_maxphyaddr", 48)}
    if kind == "a":
        kw.update(tdp="ept", ept_ad=bool(cfg["ept_ad"]), max_tdp_level=cfg["max_tdp_level"])
    elif kind == "b":
        kw.update(tdp="npt", host_la57=bool(cfg["host_la57"]))
    elif kind == "c":
        kw.update(tdp="none")
    elif kind == "d":
        kw.update(tdp="ept", nested="ept", ept_ad=True, max_tdp_level=4,
                  nested_ept_level=cfg["ept_level"], execonly=bool(cfg["execonly"]),
                  nested_ept_ad=bool(cfg["accessed_dirty"]))
    elif kind == "e":
        kw.update(tdp="npt", nested="npt", host_la57=bool(cfg["host_la57"]))
    elif kind == "f":
        kw.update(tdp="ept", context="nested_mmu")
    else:
        raise AssertionError(f"unknown vector kind {kind!r}")
    return kw


def load_groups() -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    with gzip.open(DATA, "rt") as fh:
        for line in fh:
            row = json.loads(line)
            groups[(row["release"], row["config"]["id"])].append(row)
    return dict(groups)


GROUPS = load_groups()


def run_group(release: str, rows: list[dict[str, Any]]) -> BatchResult:
    regs = {k: np.array([r["regs"][k] for r in rows], dtype=np.uint64)
            for k in ("cr0", "cr4", "efer")}
    return compute_batch(
        release, cr0=regs["cr0"], cr4=regs["cr4"], efer=regs["efer"],
        smm=np.array([r["regs"]["smm"] for r in rows], dtype=bool),
        guest_mode=np.array([r["regs"]["guest_mode"] for r in rows], dtype=bool),
        **config_kwargs(rows[0]["config"]),
    )


def mismatches(release: str, rows: list[dict[str, Any]], res: BatchResult) -> list[str]:
    """Every disagreement between one batch and its vector rows, as readable lines."""
    pre_split = not res.era.has_cpu_role
    out = []
    for i, row in enumerate(rows):
        want: dict[str, int] = {
            "cpu_role.as_u64": row["cpu_role"]["as_u64"],
            "cpu_role.base": row["cpu_role"]["base"],
            "cpu_role.ext": row["cpu_role"]["ext"],
        }
        got: dict[str, int] = {
            "cpu_role.as_u64": int(res.cpu_as_u64[i]),
            "cpu_role.base": int(res.cpu_base[i]),
            "cpu_role.ext": int(res.cpu_ext[i]),
        }
        # Before 5.19 the vectors' root_role is the stored mmu_role.base.word.
        want["root_role"] = row["root_role"]
        got["root_role"] = int(res.cpu_base[i] if pre_split else res.root_role[i])
        extra = row["extra"]
        for name in REQUIRED_EXTRAS:
            if name in extra:
                assert name in res.extra, f"{release}: extra {name!r} not computed"
        for name, arr in res.extra.items():
            if name == "warn":
                want[name], got[name] = extra.get("warn", 0), int(arr[i])
            elif name in extra:
                want[name], got[name] = extra[name], int(arr[i])
        bad = [f"{k}: want {want[k]:#x} got {got[k]:#x}" for k in want if want[k] != got[k]]
        if bad:
            out.append(f"{release} {row['config']['id']} regs={row['regs']}: " + "; ".join(bad))
    return out


@pytest.mark.parametrize("release,config_id", sorted(GROUPS), ids=lambda v: str(v))
def test_vectors_match_kernel(release: str, config_id: str) -> None:
    rows = GROUPS[(release, config_id)]
    res = run_group(release, rows)
    assert res.era.name == RELEASE_ERA[release]
    bad = mismatches(release, rows, res)
    assert not bad, f"{len(bad)}/{len(rows)} rows differ:\n" + "\n".join(bad[:20])


def test_every_vector_row_is_checked() -> None:
    assert sum(len(rows) for rows in GROUPS.values()) == 8020
    assert {release for release, _ in GROUPS} == set(RELEASE_ERA)


# --- behaviour worth pinning on its own ------------------------------------------------

PE, ET, WP, PG = 1, 1 << 4, 1 << 16, 1 << 31
PSE, PAE, LA57, SMEP, SMAP, PKE = 1 << 4, 1 << 5, 1 << 12, 1 << 20, 1 << 21, 1 << 22
LME, LMA, NX = 1 << 8, 1 << 10, 1 << 11
LONG = dict(cr0=PE | ET | PG | WP, cr4=PAE, efer=LME | LMA | NX, smm=0, guest_mode=0)


def test_scalars_broadcast_to_zero_d_arrays() -> None:
    res = compute_batch("6.6.47", tdp="ept", **LONG)
    assert res.era.name == "6.4"
    assert res.root_role.shape == () and res.root_role.dtype == np.uint32
    assert int(res.root_role) == 0x3784
    assert res.cpu_as_u64.dtype == np.uint64


def test_shapes_broadcast_across_inputs() -> None:
    res = compute_batch("5.19", tdp="none", cr0=np.array([PE | ET, PE | ET | PG | WP]),
                        cr4=PAE, efer=np.array([[0], [LME | LMA]]), smm=0, guest_mode=0)
    assert res.cpu_base.shape == (2, 2)


def test_5_19_shadow_root_has_pae_level_and_forced_nx() -> None:
    # 32-bit non-PAE guest, WP=1: level 3, has_4_byte_gpte, efer_nx, cr0_wp.
    res = compute_batch("5.19", tdp="none", cr0=PE | ET | PG | WP, cr4=0, efer=0,
                        smm=0, guest_mode=0)
    assert int(res.root_role) == 0x3713
    res = compute_batch("5.19", tdp="none", cr0=PE | ET, cr4=0, efer=0, smm=0, guest_mode=0)
    assert int(res.root_role) == 0x1783


def test_4_20_direct_root_pages_drop_cr4_pae() -> None:
    res = compute_batch("4.20", tdp="ept", **LONG)
    assert res.extra["calc_root_page_role"] & 0x10  # the fast-switch role has cr4_pae
    assert not res.root_role & 0x10                   # direct root pages do not


def test_5_10_direct_root_pages_are_8_byte() -> None:
    res = compute_batch("5.10", tdp="none", cr0=PE | ET, cr4=0, efer=0, smm=0, guest_mode=0)
    assert not res.cpu_base & 0x10 and res.root_role & 0x10


def test_4_19_stored_role_is_masked_and_tdp_role_lacks_guest_bits() -> None:
    res = compute_batch("4.19", tdp="ept", ept_ad=False, **LONG)
    assert int(res.cpu_base) == 0x10000                 # only ad_disabled survives the mask
    assert int(res.root_role) == 0x10784                 # level 4, direct, ACC_ALL
    assert int(res.cpu_ext) == 0


def test_4_18_nested_ept_keeps_l1_smm() -> None:
    res = compute_batch("4.18", tdp="ept", nested="ept", nested_ept_ad=False,
                        **{**LONG, "smm": 1, "guest_mode": 1})
    assert int(res.cpu_base) == 0x01030000
    assert int(res.extra["ept_ad"]) == 0 and int(res.extra["shadow_root_level"]) == 4


def test_npt_is_4_level_before_5_15_whatever_the_host() -> None:
    for kernel, level in (("4.18", 4), ("5.10", 4), ("5.15", 5), ("6.4", 5)):
        res = compute_batch(kernel, tdp="npt", host_la57=True, **LONG)
        assert int(res.root_role) & 0xF == level, kernel


def test_5_level_nested_ept_is_rejected_before_5_10() -> None:
    with pytest.raises(ValueError, match="4-level EPTPs"):
        compute_batch("4.20", tdp="ept", nested="ept", nested_ept_level=5, **LONG)


def test_bad_option_combination_is_rejected() -> None:
    with pytest.raises(ValueError, match="nested"):
        compute_batch("5.19", tdp="none", nested="ept", **LONG)


# --- cross-check with the scalar path ------------------------------------------------

ERAS = ("4.18", "4.19", "4.20", "5.10", "5.15", "5.17", "5.18", "5.19", "6.4", "6.14",
        "6.18")

CONFIGS: dict[str, dict[str, Any]] = {
    "tdp-ept-ad1-max4": dict(tdp="ept"),
    "tdp-ept-ad0-max5-maxphy52": dict(tdp="ept", ept_ad=False, max_tdp_level=5,
                                      maxphyaddr=52),
    "tdp-ept-ad1-max5-maxphy48": dict(tdp="ept", max_tdp_level=5),
    "tdp-npt-host4": dict(tdp="npt"),
    "tdp-npt-host5": dict(tdp="npt", host_la57=True),
    "shadow": dict(tdp="none"),
    "nested-ept-l4-execonly1-ad0": dict(tdp="ept", nested="ept", execonly=True,
                                        nested_ept_ad=False),
    "nested-ept-l5-ad1": dict(tdp="ept", nested="ept", nested_ept_level=5),
    "nested-npt-host4": dict(tdp="npt", nested="npt"),
    "nested-npt-host5": dict(tdp="npt", nested="npt", host_la57=True),
    "nested-mmu": dict(tdp="ept", context="nested_mmu"),
}


def full_grid() -> dict[str, np.ndarray]:
    """Every valid state: CR0 PE|ET + PG, WP; CR4 PAE PSE SMEP SMAP PKE LA57;
    EFER LME=LMA (only with PG and PAE), NX; SMM; guest mode."""
    states = []
    for pg, wp, pae, pse, smep, smap, pke, la57, lma, nx, smm, gm in itertools.product(
            (0, 1), repeat=12):
        if lma and not (pg and pae):
            continue
        cr0 = PE | ET | (PG if pg else 0) | (WP if wp else 0)
        cr4 = ((PAE if pae else 0) | (PSE if pse else 0) | (SMEP if smep else 0)
               | (SMAP if smap else 0) | (PKE if pke else 0) | (LA57 if la57 else 0))
        efer = (LME | LMA if lma else 0) | (NX if nx else 0)
        states.append((cr0, cr4, efer, smm, gm))
    cols = np.array(states, dtype=np.uint64).T
    return dict(cr0=cols[0], cr4=cols[1], efer=cols[2], smm=cols[3].astype(bool),
                guest_mode=cols[4].astype(bool))


def _scalar_words(result: Any) -> dict[str, int]:
    """cpu_role as_u64, root_role word (0 if none) and the extras of a scalar RoleResult."""
    root = result.root_role
    words = {"cpu_role": result.cpu_role.as_u64, "root_role": 0 if root is None else root.word}
    words.update(result.extra)
    return words


# 5-level nested EPT does not exist before 5.10 (4-level EPTPs only): not a case to compare.
GRID_CASES = [(k, c) for k in ERAS for c in sorted(CONFIGS)
              if not (resolve(k).version < (5, 10) and CONFIGS[c].get("nested_ept_level") == 5)]


@pytest.mark.parametrize(("kernel", "config"), GRID_CASES)
def test_matches_scalar_compute_on_full_grid(kernel: str, config: str) -> None:
    from mmulib.compute import compute
    from mmulib.request import Request

    kw = CONFIGS[config]
    grid = full_grid()
    res = compute_batch(kernel, **grid, **kw)
    assert len(grid["cr0"]) == 2560  # as the vectors' rows_per_config
    bad = []
    for i in range(len(grid["cr0"])):
        regs = {k: (bool(v[i]) if v.dtype == bool else int(v[i])) for k, v in grid.items()}
        want = _scalar_words(compute(Request(kernel=kernel, **regs, **kw)))
        got = {"cpu_role": int(res.cpu_as_u64[i]), "root_role": int(res.root_role[i])}
        got.update({name: int(arr[i]) for name, arr in res.extra.items() if name in want})
        diff = {k: (want[k], got.get(k)) for k in want if want[k] != got.get(k)}
        if diff:
            bad.append(f"{regs}: (scalar, vector) = {diff}")
    assert not bad, f"{len(bad)} states differ:\n" + "\n".join(bad[:20])
