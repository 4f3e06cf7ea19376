"""The live probe: the same replay script on this host's KVM, traced by the kernel itself.

Standard library only (ctypes, fcntl, mmap, struct).  The layers, bottom up:

* :mod:`~mmulib.live.kvmapi`: /dev/kvm, VMs, vCPUs, guest memory, KVM_RUN exits;
* :mod:`~mmulib.live.asm`, :mod:`~mmulib.live.pagetables`, :mod:`~mmulib.live.guest`: the
  probe guest (its instructions, identity-mapped tables in every paging format, its program);
* :mod:`~mmulib.live.ringbuf`, :mod:`~mmulib.live.tracing`: a private tracefs instance and
  its binary records; :mod:`~mmulib.live.records`: root pages versus fault-created pages;
* :mod:`~mmulib.live.host`: release, vendor module, backend, guest CPUID;
* :mod:`~mmulib.live.probe`: :func:`run_script`, the executor;
* :mod:`~mmulib.live.compare`: ``probe()``, the host's root records next to the model's,
  a verdict per op; :mod:`~mmulib.live.report` prints them, :mod:`~mmulib.live.views` draws
  them; :mod:`~mmulib.live.builtins`: the built-in scripts; :mod:`~mmulib.live.command`:
  ``mmulib probe``.

Nothing here runs at import time, and the package imports its modules only when a name
is used (``mmulib probe``'s argument parser needs none of them); :func:`preflight` says in
one line what is missing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import EXIT_UNAVAILABLE, HostRefused, LiveUnavailable, ProbeError

if TYPE_CHECKING:
    from .builtins import BUILTINS, builtin, builtin_names
    from .compare import Comparison
    from .host import HostBackend, guest_features, host_backend
    from .kvmapi import KVM_DEVICE, Kvm
    from .probe import UNSUPPORTED, LiveResult, StepResult, run_script
    from .records import TRACE_EVENTS
    from .tracing import TraceOverrun, TraceSession

__all__ = [
    "EXIT_UNAVAILABLE", "HostRefused", "LiveUnavailable", "ProbeError", "HostBackend",
    "guest_features", "host_backend", "KVM_DEVICE", "Kvm", "UNSUPPORTED", "LiveResult",
    "StepResult", "run_script", "TRACE_EVENTS", "TraceOverrun", "TraceSession", "preflight",
    "BUILTINS", "builtin", "builtin_names", "Comparison",
]

_LAZY = {
    "HostBackend": "host", "guest_features": "host", "host_backend": "host",
    "KVM_DEVICE": "kvmapi", "Kvm": "kvmapi",
    "UNSUPPORTED": "probe", "LiveResult": "probe", "StepResult": "probe", "run_script": "probe",
    "TRACE_EVENTS": "records", "TraceOverrun": "tracing", "TraceSession": "tracing",
    "BUILTINS": "builtins", "builtin": "builtins", "builtin_names": "builtins",
    "Comparison": "compare",
}


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def preflight(device: str = "/dev/kvm") -> HostBackend:
    """Check everything a probe needs, with no lasting side effect; the host's backend.

    Opens ``device``, reads the KVM module parameters, and starts and removes a trace
    instance with the probe's events (mounting tracefs for that moment if needed).

    Raises:
        LiveUnavailable: with one line saying what is missing and how to get it.
    """
    from .host import host_backend
    from .kvmapi import Kvm
    from .records import TRACE_EVENTS
    from .tracing import TraceSession

    with Kvm(device):
        host = host_backend()
    with TraceSession(TRACE_EVENTS):
        pass
    return host
