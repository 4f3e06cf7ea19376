"""``python -m mmulib.live [SCRIPT.json] [--json]``: run a replay script on this host's KVM.

Prints each op with the root pages the kernel traced (or, with ``--json``, the whole
:class:`~mmulib.live.probe.LiveResult`).  Without a script it only checks that a probe could
run.  When something the probe needs is missing it prints one line saying what and how to
get it, and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import EXIT_UNAVAILABLE, LiveUnavailable, preflight, run_script

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmulib.live", description=__doc__)
    parser.add_argument("script", nargs="?", help="replay script (JSON); omit to only check")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--device", default="/dev/kvm", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.script is None:
            host = preflight(args.device)
            print(f"ok: {host.release}, {host.module}, {host.backend} paging"
                  f"{', TDP MMU' if host.tdp_mmu else ''}; tracefs and kvmmmu events usable")
            return 0
        with open(args.script, encoding="utf-8") as f:
            script = json.load(f)
        result = run_script(script, device=args.device)
    except LiveUnavailable as exc:
        print(f"mmulib probe: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=1)
        print()
        return 0
    for step in [result.initial, *result.steps]:
        op = " ".join(f"{k}={v}" for k, v in step.op.items() if k != "op" and v is not None)
        print(f"{step.index:>3} {step.op['op']} {op}: {step.status}"
              + (f" ({step.reason})" if step.reason else ""))
        for r in step.records:
            print(f"      kvm_mmu_get_page gfn={r['gfn']:#x} role={r['role']:#010x} "
                  f"l{r['level']} {'new' if r['created'] else 'existing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
