"""``mmulib probe`` stopped mid-scenario leaves tracefs as it was.

A child runs ``python -m mmulib.live`` on a long script (thousands of MOV CR3, about a second
of guest runs); once its private trace instance exists it gets SIGTERM (or Ctrl-C's SIGINT).
Afterwards the instance list and every buffer's event enables, pid filter, tracing switch,
size and clock must be what they were before, and tracefs mounted or not as before.  Other
processes' instances (a concurrent test run) are left out of the comparison.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmulib.live import LiveUnavailable, preflight
from mmulib.live.builtins import LONG
from mmulib.live.tracing import find_tracefs, instance_pid, snapshot

pytestmark = pytest.mark.kvm


def state(*pids: int) -> dict[str, str]:
    """tracefs as a probe must leave it, without other processes' instances."""
    return snapshot(pids)


def others(pids: set[int]) -> bool:
    """Whether another process's mmulib instance is visible (it may have mounted tracefs)."""
    return any(instance_pid(n) not in (None, *pids)
               for n in snapshot().get("instances", "").split("\n") if n)


@pytest.fixture
def long_script(tmp_path) -> Path:
    ops = [{"op": "run"}] + [{"op": "mov_cr3", "value": hex(0x102000 + 0x1000 * (i % 6))}
                             for i in range(4000)]
    path = tmp_path / "long.json"
    path.write_text(json.dumps({"name": "long", "sregs": LONG, "ops": ops}))
    return path


@pytest.mark.parametrize(("sig", "returncode", "message"), [
    (signal.SIGTERM, 128 + signal.SIGTERM, ""),
    (signal.SIGINT, 128 + signal.SIGINT, "mmulib probe: interrupted\n"),
])
def test_a_probe_stopped_mid_scenario_leaves_tracefs_as_it_was(long_script, sig, returncode,
                                                               message):
    try:
        preflight()
    except LiveUnavailable as exc:
        pytest.skip(str(exc))
    before = state(os.getpid())
    child = subprocess.Popen([sys.executable, "-m", "mmulib.live", str(long_script), "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    name, deadline = "", time.monotonic() + 30
    while not name and time.monotonic() < deadline and child.poll() is None:
        root = find_tracefs()
        if root:
            name = next((n for n in os.listdir(Path(root, "instances"))
                         if instance_pid(n) == child.pid), "")
        time.sleep(0.005)
    assert name, f"the probe never created its instance: {child.communicate()}"
    time.sleep(0.3)                                 # inside the scenario's guest runs
    child.send_signal(sig)
    out, err = child.communicate(timeout=60)
    assert (child.returncode, err) == (returncode, message)
    assert out == "", "the probe finished before the signal: make the script longer"
    after = state(os.getpid(), child.pid)
    assert name not in after["instances"].split("\n") if "instances" in after else True
    if before["mounted"] != after["mounted"]:
        assert others({os.getpid(), child.pid}), "tracefs mount state changed"
        before = {k: v for k, v in before.items() if k != "mounted"}
        after = {k: v for k, v in after.items() if k != "mounted"}
    assert after == before
