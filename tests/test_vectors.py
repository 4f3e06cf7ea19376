"""Every row of the kernel-computed sample vectors, checked through ``mmulib roles --batch``.

The rows in tests/data/kernel-roles-sample.jsonl.gz were produced by compiling
each release's own role code and running it (see tests/data/README.md).  Each
row becomes one batch request; the answer must reproduce the kernel's words:

* ``cpu_role.as_u64`` against ``cpu_role`` (5.19+) or ``mmu_role`` as stored
  (4.20-5.18, masked with mmu_base_role_mask in 4.20);
* from 5.19 ``root_role.word`` (0 for nested_mmu, which never sets it);
* before 5.19 the copies kept in struct kvm_mmu (root_level,
  shadow_root_level, direct_map, ept_ad, nx, last_nonleaf_level), the fast-switch
  role ``calc_root_page_role`` and the role handed to the PGD switch by the
  nested inits (``new_pgd_role``);
* the number of WARN conditions that fired.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "kernel-roles-sample.jsonl.gz"


def load_rows() -> list[dict]:
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def request_of(row: dict) -> dict:
    """Translate a vector row's configuration into a batch request (README's key names)."""
    c, r = row["config"], row["regs"]
    req = {"kernel": row["release"], "cr0": hex(r["cr0"]), "cr4": hex(r["cr4"]),
           "efer": hex(r["efer"]), "smm": bool(r["smm"]), "guest_mode": bool(r["guest_mode"]),
           "maxphyaddr": c["guest_maxphyaddr"]}
    kind = c["kind"]
    if kind == "a":
        req.update(tdp="ept", ept_ad=bool(c["ept_ad"]), max_tdp_level=c["max_tdp_level"])
    elif kind == "b":
        req.update(tdp="npt", host_la57=bool(c["host_la57"]))
    elif kind == "c":
        req.update(tdp="none")
    elif kind == "d":
        req.update(tdp="ept", nested="ept", nested_ept_level=c["ept_level"],
                   execonly=bool(c["execonly"]), nested_ept_ad=bool(c["accessed_dirty"]))
    elif kind == "e":
        req.update(tdp="npt", nested="npt", host_la57=bool(c["host_la57"]))
    elif kind == "f":
        req.update(tdp="ept", context="nested_mmu")
    else:  # pragma: no cover - a new kind in the data must be mapped here
        raise AssertionError(f"unknown vector kind {kind!r}")
    return req


def expected_and_got(row: dict, res: dict) -> tuple[dict, dict]:
    split = "cpu_role" in res
    side = res["cpu_role"] if split else res["mmu_role"]
    want = {"as_u64": row["cpu_role"]["as_u64"], "base": row["cpu_role"]["base"],
            "ext": row["cpu_role"]["ext"], "root_role": row["root_role"]}
    got = {"as_u64": side["as_u64"], "base": side["word"], "ext": side["ext"]["word"]}
    if split:
        got["root_role"] = 0 if res["root_role"] is None else res["root_role"]["word"]
    else:
        # Before 5.19 the vector's root_role is mmu_role.base as stored.
        got["root_role"] = side["word"]
    for key, value in row["extra"].items():
        if key == "new_pgd_calls":
            continue
        if key == "warn":
            continue
        want[key] = value
        got[key] = res["extra"].get(key)
    want["warn"] = row["extra"].get("warn", 0)
    got["warn"] = len(res["warnings"])
    return want, got


@pytest.fixture(scope="module")
def batch_results() -> tuple[list[dict], list[dict]]:
    rows = load_rows()
    lines = "".join(json.dumps(request_of(r)) + "\n" for r in rows)
    proc = subprocess.run([sys.executable, "-m", "mmulib", "roles", "--batch", "-"],
                          input=lines, capture_output=True, text=True, check=True)
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    return rows, results


def test_vectors_cover_every_release_and_kind() -> None:
    rows = load_rows()
    assert len(rows) == 8020
    kinds = Counter((r["release"], r["config"]["kind"]) for r in rows)
    assert len({k[0] for k in kinds}) == 10
    assert all(n > 0 for n in kinds.values())
    assert len(kinds) == 60


def test_every_vector_row_matches_through_roles_batch(batch_results) -> None:
    rows, results = batch_results
    assert len(results) == len(rows)
    failures = []
    for row, res in zip(rows, results):
        assert "error" not in res, (row, res)
        want, got = expected_and_got(row, res)
        if want != got:
            diff = {k: (want[k], got.get(k)) for k in want if want[k] != got.get(k)}
            failures.append((row["release"], row["config"]["id"], row["regs"], diff))
    assert not failures, f"{len(failures)} rows differ, first: {failures[:3]}"


def test_batch_answers_name_the_era(batch_results) -> None:
    rows, results = batch_results
    eras = {(r["release"], res["era"]) for r, res in zip(rows, results)}
    assert eras == {("4.20", "4.20"), ("5.10", "5.10"), ("5.17-rc5", "5.17"),
                    ("5.18.12", "5.18"), ("5.19", "5.19"), ("6.4.0", "6.4"), ("6.6.47", "6.4"),
                    ("6.14", "6.14"), ("6.19", "6.18"), ("7.1.5", "6.18")}
