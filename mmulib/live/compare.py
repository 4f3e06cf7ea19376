"""Probe = replay on real KVM: the host's ``kvm_mmu_get_page`` roots next to the model's.

:func:`probe` runs a replay script twice: on this host's KVM (:func:`mmulib.live.run_script`,
traced by the kernel's own tracepoint) and through the simulator configured as the host
(:func:`model_config`: the era ``resolve(host release)``, shadow paging or EPT/NPT and the
TDP MMU as the KVM module parameters say).  :func:`compare` puts the two side by side, op by
op, and gives each op one verdict:

* ``agree``: the host ran the op and traced exactly the model's root records, in order
  (gfn, role word, level, created);
* ``MISMATCH``: the host ran the op and the records differ, or one side refused what the
  other ran;
* ``not supported on this host``: the host lacks what the op needs (a CPUID feature, SMM, a
  paging mode its KVM_SET_SREGS silently drops); the detail is the probe's reason;
* ``refused by KVM``: the op breaks a rule every KVM enforces, and the model refuses it too;
* ``not probed``: the probe cannot drive the op (INIT, nested entry), or an earlier op was
  not supported or refused, so the host is no longer in the script's state.

Only ``agree`` and ``MISMATCH`` are comparisons; the other three say why there is none.
The first row, index -1, is the initial ``KVM_SET_SREGS`` of the script's ``sregs``.

>>> from mmulib.live.host import HostBackend
>>> host = HostBackend("6.18.44", "kvm_pvm", "shadow", False, False)
>>> model_config(host, 46).script_keys()
{'kernel': '6.18', 'tdp': 'none', 'tdp_mmu': False, 'vendor': 'vmx', 'maxphyaddr': 46}
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from ..eras import resolve
from ..sim.replay import ReplayError, summary
from ..sim.replay import run_script as model_run_script
from .host import HostBackend
from .kvmapi import KVM_DEVICE
from .probe import UNSUPPORTED, LiveResult, StepResult, run_script

__all__ = ["AGREE", "MISMATCH", "NOT_SUPPORTED", "REFUSED", "NOT_PROBED", "VERDICTS",
           "ModelConfig", "ModelStep", "StepComparison", "Comparison", "model_config",
           "run_model", "judge", "compare", "probe", "record_text", "op_text"]

AGREE = "agree"
MISMATCH = "MISMATCH"
NOT_SUPPORTED = UNSUPPORTED.rstrip(": ")        # "not supported on this host"
REFUSED = "refused by KVM"
NOT_PROBED = "not probed"
VERDICTS = (AGREE, MISMATCH, NOT_SUPPORTED, REFUSED, NOT_PROBED)
"""Every verdict, in the order summaries list them."""

_RECORD_KEYS = ("gfn", "role", "level", "created")
_SCRIPT_KEYS = ("name", "description", "sregs", "ops")


@dataclass(frozen=True)
class ModelConfig:
    """How the simulator is configured to stand for the host."""

    kernel: str              # the host's release as major.minor
    era: str                 # resolve(kernel).name
    tdp: str                 # "none" (shadow paging), "ept" or "npt"
    tdp_mmu: bool
    vendor: str              # "vmx" or "svm"
    maxphyaddr: int          # the guest's, from the CPUID KVM holds
    ept_ad: bool = True
    max_tdp_level: int = 4
    host_la57: bool = False

    def script_keys(self) -> dict[str, Any]:
        """The replay-script keys that configure the simulator this way."""
        keys: dict[str, Any] = {"kernel": self.kernel, "tdp": self.tdp, "tdp_mmu": self.tdp_mmu,
                                "vendor": self.vendor, "maxphyaddr": self.maxphyaddr}
        if self.tdp == "ept":
            keys.update(ept_ad=self.ept_ad, max_tdp_level=self.max_tdp_level)
        elif self.tdp == "npt":
            keys.update(host_la57=self.host_la57)
        return keys

    def describe(self) -> str:
        paging = "shadow paging" if self.tdp == "none" else self.tdp.upper()
        tdp_mmu = "TDP MMU" if self.tdp_mmu else "no TDP MMU"
        return (f"mmulib.sim era {self.era} (resolve({self.kernel!r})): {paging}, {tdp_mmu}, "
                f"vendor {self.vendor}, guest MAXPHYADDR {self.maxphyaddr}")


def model_config(host: HostBackend, maxphyaddr: int = 48) -> ModelConfig:
    """The simulator configuration that stands for ``host``.

    Raises:
        UnknownReleaseError: the host's release is older than every modelled era.
    """
    era = resolve(host.kernel)
    return ModelConfig(host.kernel, era.name, host.tdp, host.tdp_mmu, host.vendor, maxphyaddr,
                       host.ept_ad, host.max_tdp_level, host.host_la57)


@dataclass(frozen=True)
class ModelStep:
    """What the model did for one op: its root records and sentence, or why it did not."""

    records: list[dict[str, Any]] | None      # None: the model did not run the op
    note: str                                 # the simulator's sentence, or the refusal
    refused: bool = False


def _record(data: dict[str, Any]) -> dict[str, Any]:
    return {k: data[k] for k in _RECORD_KEYS}


def _model_records(events: Any) -> list[dict[str, Any]]:
    return [_record(e.to_json()) for e in events if e.name == "kvm_mmu_get_page"]


def run_model(script: dict[str, Any], config: ModelConfig) -> tuple[ModelStep, list[ModelStep]]:
    """The model's initial ``KVM_SET_SREGS`` and every op of ``script``, as :class:`ModelStep`.

    The simulator reports nothing for a script with an invalid op, so when it refuses op
    ``i`` the ops before it are run again on their own, op ``i`` is the refusal and the ops
    after it were not run.
    """
    base = {**{k: script[k] for k in ("sregs", "ops") if k in script}, **config.script_keys()}
    ops = list(script.get("ops") or [])
    initial = ModelStep([], "KVM_SET_SREGS (no root is looked up before a VM entry)")
    try:
        return initial, _model_steps(model_run_script(base))
    except ReplayError as exc:
        why = str(exc)
    found = re.match(r"op (\d+) \(", why)
    if not found:
        return (ModelStep(None, why, refused=True),
                [ModelStep(None, "the model refused the initial sregs")] * len(ops))
    bad = int(found[1])
    done = _model_steps(model_run_script({**base, "ops": ops[:bad]})) if bad else []
    rest = [ModelStep(None, f"the model refused op {bad}")] * (len(ops) - bad - 1)
    return initial, [*done, ModelStep(None, why, refused=True), *rest]


def _model_steps(result: Any) -> list[ModelStep]:
    return [ModelStep(_model_records(evs), summary(op, evs))
            for op, evs in zip(result.ops, result.per_op)]


@dataclass
class StepComparison:
    """One op: the model's records, the host's, and the verdict (see the module docstring).

    ``detail`` says why for every verdict but ``agree``; ``model_note`` is the simulator's
    one-sentence account of the op; ``regs`` and ``changed`` are the host's read-back
    registers and the ones it did not take as asked.
    """

    index: int
    op: dict[str, Any]
    verdict: str
    detail: str = ""
    model: list[dict[str, Any]] | None = None
    host: list[dict[str, Any]] | None = None
    model_note: str = ""
    host_status: str = ""
    regs: dict[str, int] = field(default_factory=dict)
    changed: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def compared(self) -> bool:
        """Whether this step is a comparison (``agree`` or ``MISMATCH``)."""
        return self.verdict in (AGREE, MISMATCH)

    @property
    def verdict_text(self) -> str:
        """``verdict: detail`` (``not supported on this host: <reason>``), or the verdict."""
        return f"{self.verdict}: {self.detail}" if self.detail else self.verdict


def _held(changed: dict[str, dict[str, int]]) -> str:
    return ", ".join(f"{k.upper()}={v['read back']:#x} (asked {v['requested']:#x})"
                     for k, v in changed.items())


def judge(host: StepResult, model: ModelStep, diverged: str = "") -> StepComparison:
    """The verdict on one op (``diverged``: why the host's state is no longer the script's)."""
    out = StepComparison(host.index, host.op, NOT_PROBED, model=model.records,
                         model_note=model.note, host_status=host.status, regs=host.regs,
                         changed=host.changed)
    if host.status == "ok":
        out.host = [_record(r) for r in host.records]
    if diverged:
        out.verdict, out.detail = NOT_PROBED, diverged
    elif host.status == "unsupported":
        out.verdict, out.detail = NOT_SUPPORTED, host.reason.removeprefix(UNSUPPORTED)
    elif host.status == "not probed":
        out.verdict, out.detail = NOT_PROBED, host.reason
    elif host.status == "refused":
        if model.refused:
            out.verdict, out.detail = REFUSED, host.reason
        else:
            out.verdict = MISMATCH
            out.detail = f"KVM refused the op ({host.reason}); the model runs it"
    elif host.changed:
        out.verdict = NOT_SUPPORTED
        out.detail = f"the host ran the op but holds {_held(host.changed)}"
    elif model.records is None:
        out.verdict = MISMATCH
        out.detail = f"the host ran the op; the model did not ({model.note})"
    elif out.host == model.records:
        out.verdict = AGREE
    else:
        out.verdict, out.detail = MISMATCH, "the root records differ"
    return out


@dataclass
class Comparison:
    """A whole script: the host, the model standing for it, and every op's verdict."""

    script: dict[str, Any]
    host: dict[str, Any]
    model: ModelConfig
    steps: list[StepComparison]
    smm: bool = False
    features: dict[str, bool] = field(default_factory=dict)
    cpuid_changed: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.script.get("name") or "script")

    @property
    def ops(self) -> list[StepComparison]:
        """The script's ops, without the initial KVM_SET_SREGS row."""
        return [s for s in self.steps if s.index >= 0]

    def counts(self) -> dict[str, int]:
        """How many rows (the initial KVM_SET_SREGS included) got each verdict."""
        c = Counter(s.verdict for s in self.steps)
        return {v: c.get(v, 0) for v in VERDICTS}

    @property
    def agrees(self) -> bool:
        """No MISMATCH (rows that are not comparisons do not count against it)."""
        return all(s.verdict != MISMATCH for s in self.steps)

    def not_supported(self) -> list[StepComparison]:
        """The rows the host could not do, with its reasons."""
        return [s for s in self.steps if s.verdict == NOT_SUPPORTED]

    def to_json(self) -> dict[str, Any]:
        return {"script": self.script, "host": self.host, "model": asdict(self.model),
                "smm": self.smm, "features": self.features,
                "cpuid_changed": self.cpuid_changed, "counts": self.counts(),
                "steps": [asdict(s) for s in self.steps]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Comparison:
        """The inverse of :meth:`to_json` (e.g. a recorded run)."""
        return cls(data["script"], data["host"], ModelConfig(**data["model"]),
                   [StepComparison(**s) for s in data["steps"]], data.get("smm", False),
                   data.get("features", {}), data.get("cpuid_changed", []))

    def text(self) -> str:
        """The two sequences in two columns, a verdict per row, and a summary."""
        from .report import comparison_text

        return comparison_text(self)


def _check_one_vcpu(script: dict[str, Any]) -> None:
    vcpus = script.get("vcpus", 1)
    if vcpus not in (1, "1") or any(isinstance(o, dict) and o.get("vcpu", 0) not in (0, "0")
                                    for o in script.get("ops") or []):
        raise ValueError("the probe runs one vCPU: drop 'vcpus' and the ops' 'vcpu'")


def compare(script: dict[str, Any], live: LiveResult) -> Comparison:
    """Put ``live`` (``script`` run on the host) next to the model of that host."""
    config = model_config(live.host, live.maxphyaddr)
    m_initial, m_steps = run_model(script, config)
    steps = [judge(live.initial, m_initial)]
    diverged = ""
    for host_step, model_step in zip(live.steps, m_steps):
        row = judge(host_step, model_step, diverged)
        steps.append(row)
        if row.verdict == NOT_SUPPORTED and row.host_status == "ok" and not diverged:
            diverged = (f"op {row.index} left the host in another state than the script's "
                        f"({_held(row.changed)})")
    if steps[0].verdict == MISMATCH:         # the model refused the initial sregs
        for row in steps[1:]:
            if row.verdict == MISMATCH and row.model is None:
                row.verdict, row.detail = NOT_PROBED, "the model refused the initial sregs"
    kept = {k: script[k] for k in _SCRIPT_KEYS if k in script}
    host = {**asdict(live.host), "kernel": live.host.kernel, "tdp": live.host.tdp}
    return Comparison(kept, host, config, steps, live.smm, asdict(live.features),
                      live.cpuid_changed)


def probe(script: dict[str, Any], *, device: str = KVM_DEVICE) -> Comparison:
    """Run ``script`` on this host's KVM and in the model of this host; compare them.

    Only ``sregs`` and ``ops`` of the script are used: the host decides the release and the
    paging backend, so ``kernel``, ``tdp`` and the other configuration keys are ignored.

    Raises:
        LiveUnavailable: no usable /dev/kvm, tracefs or tracepoint (one line: what and how).
        UnknownReleaseError: the host's release is older than every modelled era.
        RequestError / ValueError: the script is malformed or uses several vCPUs.
        TraceOverrun / ProbeError: the trace is incomplete (see :func:`run_script`).
    """
    _check_one_vcpu(script)
    return compare(script, run_script(script, device=device))


def record_text(r: dict[str, Any]) -> str:
    """``gfn 0x102 role 0x3704 l4 new`` (``found`` when ``created`` is false).

    >>> record_text({"gfn": 0x102, "role": 0x3704, "level": 4, "created": False})
    'gfn 0x102 role 0x3704 l4 found'
    """
    return (f"gfn {r['gfn']:#x} role {r['role']:#x} l{r['level']} "
            f"{'new' if r['created'] else 'found'}")


def op_text(op: dict[str, Any]) -> str:
    """An op as one would say it: ``mov_cr3 0x103000``, ``set_sregs cr0=0x80000011``.

    >>> op_text({"op": "set_sregs", "cr0": None, "cr3": "0x103000"}), op_text({"op": "run"})
    ('set_sregs cr3=0x103000', 'run')
    """
    name = "KVM_SET_SREGS" if op["op"] == "sregs" else op["op"]
    args = [str(v) if k in ("value", "change") else f"{k}={v}"
            for k, v in op.items() if k != "op" and v is not None]
    return " ".join([name, *args])
