"""``mmulib probe``: run a replay script on this host's KVM and next to the model of this host.

:func:`add_arguments` imports nothing heavy, so ``mmulib``'s other commands do not pay for the
probe; :func:`run` imports the KVM, tracefs and simulator layers when it is called.

Usage::

    mmulib probe SCRIPT.json [--json]        # a replay script (the simulator's format)
    mmulib probe --builtin NAME [--json]     # a built-in script; --builtin all runs them all
    mmulib probe --list                      # the built-in scripts
    mmulib probe                             # only check that a probe could run here

The same command is ``python -m mmulib.live``.  Exit status: 0 when every step the host ran
agrees with the model (steps it could not do are reported, not counted against it); 1 when
any step is a MISMATCH; 2 when the probe cannot run here (one line on stderr says what is
missing and how to get it) or the script is invalid; 3 when the trace was incomplete; 130
after Ctrl-C and 143 after SIGTERM (the trace instance is removed first in both cases).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from .builtins import BUILTINS, builtin, builtin_names
from .errors import EXIT_UNAVAILABLE, LiveUnavailable, ProbeError

__all__ = ["add_arguments", "run", "main", "EXIT_MISMATCH", "EXIT_FAILED", "EXIT_INTERRUPTED"]

EXIT_MISMATCH = 1
EXIT_FAILED = 3
EXIT_INTERRUPTED = 128 + 2      # as a shell reports a process stopped by SIGINT
PROG = "mmulib probe"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The probe's arguments, for ``mmulib probe`` and ``python -m mmulib.live``."""
    parser.add_argument("script", nargs="?", metavar="SCRIPT.json",
                        help="replay script (JSON); omit it to only check that a probe can run")
    parser.add_argument("--builtin", metavar="NAME",
                        help="run a built-in script ('all' runs every one; see --list)")
    parser.add_argument("--list", action="store_true", help="list the built-in scripts")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.add_argument("--device", default="/dev/kvm", help=argparse.SUPPRESS)


def _scripts(args: argparse.Namespace) -> list[dict[str, Any]]:
    from ..sim.replay import load_script

    if args.script is not None and args.builtin is not None:
        raise ValueError("give a script or --builtin, not both")
    if args.builtin == "all":
        return [builtin(n) for n in builtin_names()]
    if args.builtin is not None:
        return [builtin(args.builtin)]
    script = load_script(args.script)
    script.setdefault("name", args.script)
    return [script]


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Carry out parsed arguments; the exit status (see the module docstring)."""
    from ..eras import UnknownReleaseError
    from ..request import RequestError
    from ..sim.replay import ReplayError
    from . import preflight
    from .compare import probe
    from .report import comparison_text, summary_text
    from .tracing import TraceOverrun

    out = out or sys.stdout
    err = err or sys.stderr
    if args.list:
        width = max(len(n) for n in BUILTINS)
        for name, script in BUILTINS.items():
            out.write(f"{name.ljust(width)}  {script['description']}\n")
        return 0
    try:
        if args.script is None and args.builtin is None:
            host = preflight(args.device)
            out.write(f"ok: {host.release}, {host.module}, {host.backend} paging"
                      f"{', TDP MMU' if host.tdp_mmu else ''}; tracefs and kvmmmu events "
                      "usable\n")
            return 0
        scripts = _scripts(args)
        results = [probe(s, device=args.device) for s in scripts]
    except LiveUnavailable as exc:
        err.write(f"{PROG}: {exc}\n")
        return EXIT_UNAVAILABLE
    except UnknownReleaseError as exc:
        err.write(f"{PROG}: this host's release is not modelled: {exc}\n")
        return EXIT_UNAVAILABLE
    except (ReplayError, RequestError, ValueError) as exc:
        err.write(f"{PROG}: invalid script: {exc}\n")
        return EXIT_UNAVAILABLE
    except (TraceOverrun, ProbeError) as exc:
        err.write(f"{PROG}: the trace is incomplete, so nothing is compared: {exc}\n")
        return EXIT_FAILED
    if args.json:
        data = (results[0].to_json() if len(results) == 1 and args.builtin != "all"
                else {"comparisons": [r.to_json() for r in results]})
        json.dump(data, out, indent=1)
        out.write("\n")
    else:
        for r in results:
            out.write(comparison_text(r) + "\n")
        if len(results) > 1:
            out.write(summary_text(results))
    return 0 if all(r.agrees for r in results) else EXIT_MISMATCH


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        # The trace session has removed its instance while the exception passed through.
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
