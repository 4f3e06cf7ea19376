"""``mmulib`` on the command line: eras, decode, roles (single or batch), sweep, replay, probe,
doctor.

Every invalid input exits with status 2 and one line on stderr naming the bad
value and the rule; there are no tracebacks for user errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from .eras import ERAS, UnknownReleaseError, resolve
from .layouts import LayoutError
from .live.command import add_arguments as _probe_arguments
from .regs import InvalidStateError
from .request import Request, RequestError, parse_int
from .roles import Role, decode

__all__ = ["main", "UsageError"]

USER_ERRORS: tuple[type[Exception], ...] = (RequestError, InvalidStateError, UnknownReleaseError,
                                            LayoutError)


class UsageError(Exception):
    """Bad command-line use; reported in one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _num(name: str):  # type: ignore[no-untyped-def]
    def conv(text: str) -> int:
        try:
            return parse_int(text, name)
        except RequestError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    conv.__name__ = name
    return conv


def _build_parser() -> _Parser:
    p = _Parser(prog="mmulib", description="KVM x86 MMU roles, exactly, release by release.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    e = sub.add_parser("eras", help="list the modelled kernel releases")
    e.add_argument("--json", action="store_true")

    d = sub.add_parser("decode", help="decode a kvm_mmu_page_role word (and extended role)")
    d.add_argument("word", type=_num("WORD"))
    d.add_argument("--ext", type=_num("--ext"), default=None,
                   help="a kvm_mmu_extended_role word (4.20+)")
    d.add_argument("--kernel", required=True, help="release, e.g. 5.19 or v6.6.47")
    d.add_argument("--json", action="store_true")

    r = sub.add_parser("roles", help="compute the roles KVM uses for a vCPU state")
    r.add_argument("--batch", metavar="FILE.jsonl",
                   help="one JSON request per line ('-' for stdin); one JSON result per line")
    r.add_argument("--kernel")
    r.add_argument("--tdp", choices=("none", "ept", "npt"))
    g = r.add_mutually_exclusive_group()
    g.add_argument("--tdp-mmu", dest="tdp_mmu", action="store_true", default=None)
    g.add_argument("--no-tdp-mmu", dest="tdp_mmu", action="store_false")
    for reg in ("cr0", "cr4", "efer"):
        r.add_argument(f"--{reg}", type=_num(f"--{reg}"))
    r.add_argument("--cr3", type=_num("--cr3"), default=0)
    r.add_argument("--smm", action="store_true")
    r.add_argument("--guest-mode", action=argparse.BooleanOptionalAction, default=None,
                   help="is_guest_mode at the init call (default: as the kernel's flow has it)")
    r.add_argument("--ept-ad", action=argparse.BooleanOptionalAction, default=True,
                   help="L0 uses EPT accessed/dirty bits (default: yes)")
    r.add_argument("--max-tdp-level", type=int, choices=(4, 5), default=4)
    r.add_argument("--maxphyaddr", type=int, default=48)
    r.add_argument("--host-la57", action="store_true", help="host uses 5-level paging (NPT)")
    r.add_argument("--nested", choices=("ept", "npt"), default=None,
                   help="report guest_mmu, which shadows L1's EPT/NPT for L2")
    r.add_argument("--nested-ept-level", type=int, choices=(4, 5), default=4)
    r.add_argument("--execonly", action="store_true")
    r.add_argument("--nested-ept-ad", action=argparse.BooleanOptionalAction, default=True)
    r.add_argument("--nested-cr3", type=_num("--nested-cr3"), default=0)
    r.add_argument("--context", choices=("nested_mmu",), default=None,
                   help="report the L2 walker instead")
    for reg in ("cr0", "cr4", "efer"):
        r.add_argument(f"--l2-{reg}", type=_num(f"--l2-{reg}"), default=None,
                       help=argparse.SUPPRESS)
    r.add_argument("--json", action="store_true")

    rp = sub.add_parser("replay", help="run a replay script through the vCPU simulator")
    rp.add_argument("script", metavar="SCRIPT.json")
    rp.add_argument("--kernel", default=None, help="override the script's kernel")
    rp.add_argument("--json", action="store_true")

    pr = sub.add_parser("probe", help="run a replay script on this host's KVM and compare it "
                        "with the model of this host")
    _probe_arguments(pr)

    sub.add_parser("doctor", help="is this machine ready for the notebooks? (exit 1 if not)")

    s = sub.add_parser("sweep", help="compare two eras over every valid input (refactoring check)")
    s.add_argument("--from", dest="era_from", default="5.18")
    s.add_argument("--to", dest="era_to", default="5.19")
    s.add_argument("--json", action="store_true")
    return p


# --- commands -----------------------------------------------------------------------------------


def _cmd_eras(args: argparse.Namespace, out: TextIO) -> int:
    if args.json:
        json.dump([{"era": e.name, "summary": e.summary, "cpu_side": e.cpu_side_name}
                   for e in ERAS], out)
        out.write("\n")
        return 0
    for e in ERAS:
        out.write(f"{e.name:5}  {e.summary}\n")
    return 0


def _listing(role: Role, indent: str = "  ") -> str:
    return "\n".join(f"{indent}{name:16} {bits:>5}  {value}" for name, bits, value in
                     role.listing())


def _cmd_decode(args: argparse.Namespace, out: TextIO) -> int:
    era, base, ext = decode(args.word, args.kernel, args.ext)
    if args.json:
        obj: dict[str, Any] = {"kernel": args.kernel, "era": era.name,
                               "role": {**base.to_json(), "trace": base.trace_str()}}
        if ext is not None:
            obj["ext"] = ext.to_json()
            obj["as_u64"] = base.word | ext.word << 32
        json.dump(obj, out)
        out.write("\n")
        return 0
    out.write(f"{era.page.c_name} {base.hex} (era {era.name})\n")
    out.write(f"  trace: {base.trace_str()}\n")
    out.write(_listing(base) + "\n")
    if ext is not None:
        out.write(f"{era.ext.c_name} {ext.hex}\n")  # type: ignore[union-attr]
        out.write(_listing(ext) + "\n")
    return 0


_REQUEST_KEYS = ("kernel", "tdp", "tdp_mmu", "cr0", "cr4", "efer", "cr3", "smm", "guest_mode",
                 "ept_ad", "max_tdp_level", "maxphyaddr", "host_la57", "nested",
                 "nested_ept_level", "execonly", "nested_ept_ad", "nested_cr3", "context",
                 "l2_cr0", "l2_cr4", "l2_efer")


def _request_from_args(args: argparse.Namespace) -> Request:
    missing = [f"--{k}" for k in ("kernel", "tdp", "cr0", "cr4", "efer")
               if getattr(args, k) is None]
    if missing:
        raise UsageError(f"mmulib roles: missing {', '.join(missing)} (or use --batch FILE)")
    return Request(**{k: getattr(args, k) for k in _REQUEST_KEYS})


def _print_result(res: Any, out: TextIO) -> None:
    from .compute import RoleResult

    assert isinstance(res, RoleResult)
    era = res.era
    out.write(f"kernel {res.request.kernel} -> era {era.name}\n")
    out.write(f"context {res.context}: vcpu->arch.mmu = {res.mmu}, walk_mmu = {res.walk_mmu}\n")
    out.write(f"init: {res.init}\n")
    name = era.cpu_side_name
    cpu = res.cpu_role
    if cpu.ext is not None:
        out.write(f"{name}: as_u64 {cpu.as_u64:#018x} (base {cpu.base.hex}, ext {cpu.ext.hex})\n")
    else:
        out.write(f"{name}: {cpu.base.hex}\n")
    out.write(f"  base: {cpu.base.trace_str()}\n")
    if cpu.ext is not None:
        ext = ", ".join(f"{k}={v}" for k, v in cpu.ext.fields.items() if v)
        out.write(f"  ext:  {ext or '(all zero)'}\n")
    if res.root_role is not None:
        label = "root_role" if era.has_cpu_role else "root page role"
        out.write(f"{label}: {res.root_role.hex}  {res.root_role.trace_str()}\n")
    for page in res.root_pages:
        gfn = "?" if page.gfn is None else f"{page.gfn:#x}"
        under = f" under {page.under}" if page.under else ""
        out.write(f"  root page l{page.level} gfn {gfn} {page.role.hex} ({page.kind}{under})\n")
    for k, v in res.extra.items():
        shown = f"{v:#x}" if k.endswith("_role") else str(v)
        out.write(f"  {k} = {shown}\n")
    for w in res.warnings:
        out.write(f"warning: {w}\n")
    for n in res.notes:
        out.write(f"note: {n}\n")


def _cmd_roles(args: argparse.Namespace, out: TextIO) -> int:
    from .compute import compute

    if args.batch is not None:
        return _batch(args.batch, out)
    res = compute(_request_from_args(args))
    if args.json:
        json.dump(res.to_json(), out)
        out.write("\n")
    else:
        _print_result(res, out)
    return 0


def _batch(path: str, out: TextIO) -> int:
    from .compute import compute

    try:
        src = sys.stdin if path == "-" else open(path, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"mmulib roles: cannot read {path!r}: {exc.strerror}") from None
    with src:
        for lineno, line in enumerate(src, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                res = compute(Request.from_mapping(data))
                json.dump(res.to_json(), out)
            except json.JSONDecodeError as exc:
                json.dump({"error": f"line {lineno}: not JSON: {exc.msg}"}, out)
            except USER_ERRORS as exc:
                json.dump({"error": f"line {lineno}: {exc}"}, out)
            except TypeError as exc:  # e.g. a list where a number belongs
                json.dump({"error": f"line {lineno}: {exc}"}, out)
            out.write("\n")
    return 0


def _cmd_sweep(args: argparse.Namespace, out: TextIO) -> int:
    from .sweep import sweep

    resolve(args.era_from)
    resolve(args.era_to)
    report = sweep(args.era_from, args.era_to)
    if args.json:
        json.dump(report.to_json(), out)
        out.write("\n")
    else:
        out.write(report.text() + "\n")
    return 0


def _cmd_replay(args: argparse.Namespace, out: TextIO) -> int:
    from .sim.replay import load_script, run_script

    result = run_script(load_script(args.script), kernel=args.kernel)
    if args.json:
        json.dump(result.to_json(), out)
        out.write("\n")
        return 0
    out.write(f"kernel {result.kernel} -> era {result.era}\n")
    for i, (op, evs) in enumerate(zip(result.ops, result.per_op)):
        from .sim.replay import summary

        out.write(f"[{i}] {summary(op, evs)}\n")
        for e in evs:
            out.write(f"      {e}\n")
    f = result.final
    out.write(f"final: cr0={f['cr0']:#x} cr3={f['cr3']:#x} cr4={f['cr4']:#x} efer={f['efer']:#x}"
              f" mmu={f['mmu']} walk_mmu={f['walk_mmu']}\n")
    for name, c in f["contexts"].items():
        out.write(f"  {name}: root {c['root']}; prev_roots {', '.join(c['prev_roots'])}\n")
    return 0


def _cmd_probe(args: argparse.Namespace, out: TextIO) -> int:
    from .live.command import run as probe_run

    return probe_run(args, out)


def _cmd_doctor(args: argparse.Namespace, out: TextIO) -> int:
    from .doctor import main as doctor_main

    return doctor_main(out=out)


_COMMANDS = {"eras": _cmd_eras, "decode": _cmd_decode, "roles": _cmd_roles, "sweep": _cmd_sweep,
             "replay": _cmd_replay, "doctor": _cmd_doctor, "probe": _cmd_probe}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of ``mmulib`` and ``python -m mmulib``; returns the exit status."""
    out = out or sys.stdout
    try:
        args = _build_parser().parse_args(argv)
        return _COMMANDS[args.command](args, out)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from .sim.replay import ReplayError

        if isinstance(exc, ReplayError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
