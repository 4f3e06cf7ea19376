"""The live probe: the same replay script on this host's KVM, traced by the kernel itself.

Standard library only (ctypes, fcntl, mmap, struct).  The layers, bottom up:

* :mod:`~mmulib.live.kvmapi`: /dev/kvm, VMs, vCPUs, guest memory, KVM_RUN exits;
* :mod:`~mmulib.live.asm`, :mod:`~mmulib.live.pagetables`, :mod:`~mmulib.live.guest`: the
  probe guest (its instructions, identity-mapped tables in every paging format, its program);
* :mod:`~mmulib.live.ringbuf`, :mod:`~mmulib.live.tracing`: a private tracefs instance and
  its binary records; :mod:`~mmulib.live.records`: root pages versus fault-created pages;
* :mod:`~mmulib.live.host`: release, vendor module, backend, guest CPUID;
* :mod:`~mmulib.live.probe`: :func:`run_script`, the executor.

Nothing here runs at import time; :func:`preflight` says in one line what is missing.
"""

from __future__ import annotations

from .errors import EXIT_UNAVAILABLE, HostRefused, LiveUnavailable, ProbeError
from .host import HostBackend, guest_features, host_backend
from .kvmapi import KVM_DEVICE, Kvm
from .probe import UNSUPPORTED, LiveResult, StepResult, run_script
from .records import TRACE_EVENTS
from .tracing import TraceOverrun, TraceSession

__all__ = [
    "EXIT_UNAVAILABLE", "HostRefused", "LiveUnavailable", "ProbeError", "HostBackend",
    "guest_features", "host_backend", "KVM_DEVICE", "Kvm", "UNSUPPORTED", "LiveResult",
    "StepResult", "run_script", "TRACE_EVENTS", "TraceOverrun", "TraceSession", "preflight",
]


def preflight(device: str = KVM_DEVICE) -> HostBackend:
    """Check everything a probe needs, with no lasting side effect; the host's backend.

    Opens ``device``, reads the KVM module parameters, and starts and removes a trace
    instance with the probe's events (mounting tracefs for that moment if needed).

    Raises:
        LiveUnavailable: with one line saying what is missing and how to get it.
    """
    with Kvm(device):
        host = host_backend()
    with TraceSession(TRACE_EVENTS):
        pass
    return host
