"""Why a live probe cannot run, or what the host refused.

Two kinds of "no" come back from a live run and they must never be confused with an answer:

* :class:`LiveUnavailable`: the probe cannot start at all (no ``/dev/kvm``, no permission, no
  tracefs, the ``kvmmmu`` tracepoints missing).  Its message is one line that names what is
  missing and how to get it; the command line prints it and exits with status 2.
* :class:`HostRefused`: the probe runs, but the host's KVM refuses one step (an ioctl fails,
  the guest cannot enter a paging mode, a capability is absent).  The executor turns it into
  ``"not supported on this host: <reason>"`` for that step.
"""

from __future__ import annotations

import os

__all__ = ["LiveUnavailable", "HostRefused", "ProbeError", "EXIT_UNAVAILABLE", "in_container",
           "container_hint"]

EXIT_UNAVAILABLE = 2
"""Exit status of ``mmulib probe`` when :class:`LiveUnavailable` is raised."""


class LiveUnavailable(RuntimeError):
    """A resource the live probe needs is missing; the message says which and how to get it."""


class HostRefused(RuntimeError):
    """The host's KVM refused one step of a script; the message is the reason."""


class ProbeError(RuntimeError):
    """The probe's own bookkeeping failed (e.g. a step's trace lacks the guest's marker)."""


def in_container() -> bool:
    """Whether this process looks like it runs in a Docker or Podman container."""
    return os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")


def container_hint(fix: str) -> str:
    """``fix`` as a parenthesised hint when running in a container, else ``""``."""
    return f" (inside a container: {fix})" if in_container() else ""
