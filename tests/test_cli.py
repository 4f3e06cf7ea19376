"""The command line: exit codes, one-line errors, JSON shapes, batch behaviour."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from mmulib.cli import main


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mmulib", *argv], capture_output=True,
                          text=True)


def call(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    rc = main(list(argv), out)
    return rc, out.getvalue()


def test_eras_lists_every_modelled_release() -> None:
    rc, out = call("eras", "--json")
    assert rc == 0
    assert [e["era"] for e in json.loads(out)] == [
        "4.18", "4.19", "4.20", "5.10", "5.15", "5.17", "5.18", "5.19", "6.4", "6.14", "6.18"]


def test_decode_json_names_era_and_fields() -> None:
    rc, out = call("decode", "0x3784", "--kernel", "v6.6.47", "--json")
    assert rc == 0
    obj = json.loads(out)
    assert obj["era"] == "6.4"
    assert obj["role"]["word"] == 0x3784
    # level 4 | direct (bit 7) | access 7 (bits 8-10) | efer_nx (12) | cr0_wp (13)
    assert obj["role"]["fields"] == {
        "level": 4, "has_4_byte_gpte": 0, "quadrant": 0, "direct": 1, "access": 7,
        "invalid": 0, "efer_nx": 1, "cr0_wp": 1, "smep_andnot_wp": 0, "smap_andnot_wp": 0,
        "ad_disabled": 0, "guest_mode": 0, "passthrough": 0, "smm": 0}
    assert obj["role"]["trace"] == "l4 8-byte q0 direct wux nxe ad | wp"


def test_decode_with_ext_gives_as_u64() -> None:
    rc, out = call("decode", "0x1032010", "--ext", "0x45", "--kernel", "4.20", "--json")
    assert rc == 0
    obj = json.loads(out)
    assert obj["as_u64"] == 0x45_0103_2010
    assert obj["role"]["fields"]["cr4_pae"] == 1 and obj["role"]["fields"]["smm"] == 1
    # 0x45 = valid (bit 0) | cr0_pg (bit 2) | cr4_smep (bit 6) in the 4.20 extended role
    assert {k for k, v in obj["ext"]["fields"].items() if v} == {"valid", "cr0_pg", "cr4_smep"}


def test_roles_json_has_the_documented_keys() -> None:
    p = run("roles", "--kernel", "5.19", "--tdp", "ept", "--cr0", "0x80010033", "--cr4", "0x20",
            "--efer", "0xd00", "--json")
    assert p.returncode == 0, p.stderr
    obj = json.loads(p.stdout)
    for key in ("kernel", "era", "mmu", "walk_mmu", "init", "cpu_role", "root_role",
                "root_pages"):
        assert key in obj
    assert obj["era"] == "5.19" and obj["mmu"] == "root_mmu" and obj["walk_mmu"] == "root_mmu"
    assert obj["init"] == "kvm_init_mmu -> init_kvm_tdp_mmu"
    # cpu_role: level 4 | access 7<<8 | efer_nx<<12 | cr0_wp<<13 ; ext valid | efer_lma<<7
    assert obj["cpu_role"]["word"] == 4 | 7 << 8 | 1 << 12 | 1 << 13
    assert obj["cpu_role"]["ext"]["word"] == 1 | 1 << 7
    assert obj["root_role"]["word"] == 0x3784 and obj["root_role"]["hex"] == "0x00003784"
    assert obj["root_pages"] == [{"level": 4, "role": 0x3784, "hex": "0x00003784", "gfn": 0,
                                  "kind": "tdp_mmu", "under": None}]


def test_roles_before_519_reports_mmu_role() -> None:
    rc, out = call("roles", "--kernel", "5.18", "--tdp", "ept", "--cr0", "0x80010033",
                   "--cr4", "0x20", "--efer", "0xd00", "--json")
    obj = json.loads(out)
    assert rc == 0 and "mmu_role" in obj and "cpu_role" not in obj
    assert obj["mmu_role"]["word"] == 0x3784 and obj["cpu_side"] == "mmu_role"


@pytest.mark.parametrize("argv, needle", [
    (["roles", "--kernel", "5.19", "--tdp", "ept", "--cr0", "0x80000000", "--cr4", "0",
      "--efer", "0"], "CR0=0x80000000"),
    (["roles", "--kernel", "5.19", "--tdp", "ept", "--cr0", "zz", "--cr4", "0", "--efer", "0"],
     "'zz' is not a number"),
    (["roles", "--kernel", "2.6", "--tdp", "ept", "--cr0", "1", "--cr4", "0", "--efer", "0"],
     "older than the oldest modelled era"),
    (["roles", "--kernel", "5.19", "--tdp", "ept"], "missing --cr0"),
    (["decode", "0x40000", "--kernel", "5.10"], "padding or unused"),
    (["roles", "--kernel", "5.19", "--tdp", "ept", "--nested", "npt", "--cr0", "1", "--cr4",
      "0", "--efer", "0"], "nested: 'npt' needs tdp 'npt'"),
])
def test_invalid_input_exits_2_with_one_line(argv: list[str], needle: str) -> None:
    p = run(*argv)
    assert p.returncode == 2
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert needle in lines[0]
    assert "Traceback" not in p.stderr


def test_batch_keeps_order_and_reports_bad_lines(tmp_path) -> None:
    f = tmp_path / "req.jsonl"
    f.write_text("\n".join([
        json.dumps({"kernel": "5.19", "tdp": "ept", "cr0": "0x80010033", "cr4": "0x20",
                    "efer": "0xd00"}),
        "{not json",
        json.dumps({"kernel": "5.19", "tdp": "ept", "cr0": "0x80000000", "cr4": 0, "efer": 0}),
        json.dumps({"kernel": "5.19", "tdp": "ept", "cr_0": 1, "cr4": 0, "efer": 0}),
        json.dumps({"kernel": "5.18", "tdp": "none", "cr0": "0x11", "cr4": 0, "efer": 0}),
    ]) + "\n")
    p = run("roles", "--batch", str(f))
    assert p.returncode == 0, p.stderr
    out = [json.loads(x) for x in p.stdout.splitlines()]
    assert len(out) == 5
    assert out[0]["root_role"]["word"] == 0x3784
    assert out[1]["error"].startswith("line 2: not JSON")
    assert "PG set without PE" in out[2]["error"]
    assert "unknown key 'cr_0'" in out[3]["error"]
    # 5.18 shadow, CR0.PG=0: mmu_role = direct | access 7 | level 3 (nonpaging PAE root)
    assert out[4]["mmu_role"]["word"] == 3 | 1 << 7 | 7 << 8


def test_batch_missing_file_exits_2() -> None:
    p = run("roles", "--batch", "/nonexistent/x.jsonl")
    assert p.returncode == 2 and "cannot read" in p.stderr


def test_console_script_entry_point_is_main() -> None:
    import tomllib
    from pathlib import Path

    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["mmulib"] == "mmulib.cli:main"


def test_readme_replay_example_is_what_the_command_prints() -> None:
    from pathlib import Path

    root = Path(__file__).parents[1]
    p = run("replay", str(root / "examples" / "wp-toggle-shadow.json"))
    assert p.returncode == 0, p.stderr
    summaries = [ln for ln in p.stdout.splitlines() if ln.startswith("[")]
    readme = (root / "README.md").read_text()
    for line in summaries:
        assert line in readme, line
    assert summaries[4] == "[4] mov_cr3: fast_pgd_switch hit prev_roots[0]."


def test_replay_errors_name_the_op_and_exit_2(tmp_path) -> None:
    f = tmp_path / "bad.json"
    f.write_text(json.dumps({"kernel": "6.4", "tdp": "none",
                             "sregs": {"cr0": "0x80010011", "cr4": "0x20", "efer": "0xd00",
                                       "cr3": "0x1000"},
                             "ops": [{"op": "run"}, {"op": "mov_cr0", "value": "0x80000000"}]}))
    p = run("replay", str(f))
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("error: op 1 (mov_cr0): CR0=0x80000000")
    f.write_text(json.dumps({"kernel": "6.4", "ops": [{"op": "jump"}]}))
    p = run("replay", str(f))
    assert p.returncode == 2 and "op 0: unknown op 'jump'" in p.stderr
