"""The private trace instance leaves tracefs as it found it, however the probe ends.

These tests use the real tracefs (mounting it for the moment if needed, as the probe does)
and skip, with the one-line reason, only when it cannot be used at all.  Other processes may
use tracefs at the same time, so the comparisons leave out instances that belong to them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from mmulib.live import LiveUnavailable, TraceOverrun, TraceSession, preflight
from mmulib.live.records import TRACE_EVENTS
from mmulib.live.tracing import find_tracefs, instance_pid, snapshot

SYSCALL_EVENT = "raw_syscalls/sys_enter"


def ours(snap: dict[str, str], pids: set[int]) -> dict[str, str]:
    """``snap`` without the instances of processes other than ``pids`` (and their files)."""
    def foreign(name: str) -> bool:
        pid = instance_pid(name)
        return pid is not None and pid not in pids

    out = {}
    for key, value in snap.items():
        if key == "instances":
            value = "\n".join(n for n in value.split("\n") if n and not foreign(n))
        elif foreign(key.split("/")[0]):
            continue
        out[key] = value
    return out


def foreign_instances(snap: dict[str, str], pids: set[int]) -> list[str]:
    return [n for n in snap.get("instances", "").split("\n")
            if instance_pid(n) is not None and instance_pid(n) not in pids]


def assert_as_before(before: dict[str, str], pids: set[int]) -> None:
    """tracefs is as ``before``, leaving aside what other processes' probes do meanwhile.

    Another test run on the same machine may have a session open, and so may have mounted
    tracefs; the mount state is compared only when no other process's instance is visible.
    """
    after = snapshot()
    assert [n for n in after.get("instances", "").split("\n")
            if instance_pid(n) in pids] == [n for n in before.get("instances", "").split("\n")
                                            if instance_pid(n) in pids]
    if before["mounted"] != after["mounted"]:
        assert foreign_instances(before, pids) or foreign_instances(after, pids), \
            f"tracefs was {before['mounted']!r} and is now {after['mounted']!r}"
        return
    assert ours(after, pids) == ours(before, pids)


def session_or_skip(events=TRACE_EVENTS, **kw) -> TraceSession:
    s = TraceSession(events, **kw)
    try:
        s.start()
    except LiveUnavailable as exc:
        pytest.skip(str(exc))
    return s


@pytest.fixture
def before():
    return snapshot()


def test_session_enables_only_its_events_for_this_thread(before):
    s = session_or_skip()
    try:
        assert s.path is not None and s.path.is_dir()
        assert re.fullmatch(rf"mmulib-{os.getpid()}-[0-9a-f]{{8}}", s.path.name)
        assert sorted((s.path / "set_event").read_text().split()) == [
            "kvm:kvm_pio", "kvmmmu:kvm_mmu_get_page", "kvmmmu:kvm_mmu_spte_requested"]
        assert (s.path / "set_event_pid").read_text().split() == [str(threading.get_native_id())]
        assert (s.path / "tracing_on").read_text() == "1\n"
        assert "[mono]" in (s.path / "trace_clock").read_text()
        # nothing outside the instance changed (if tracefs was mounted before)
        if before["mounted"] != "no":
            now, was = ours(snapshot(), {os.getpid()}), ours(before, {os.getpid()})
            assert {k: v for k, v in now.items() if not k.startswith(s.path.name)
                    and k != "instances"} == {k: v for k, v in was.items() if k != "instances"}
    finally:
        s.close()
    assert_as_before(before, {os.getpid()})


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_an_exception_inside_the_session_still_removes_it(before, error):
    session_or_skip().close()                      # skip here if tracefs is unusable
    with pytest.raises(error):
        with TraceSession(TRACE_EVENTS):
            raise error("boom")
    assert_as_before(before, {os.getpid()})


def test_close_is_idempotent_and_restores_signal_handlers(before):
    old = signal.getsignal(signal.SIGTERM)
    s = session_or_skip()
    assert signal.getsignal(signal.SIGTERM) == s._on_signal
    s.close()
    s.close()
    assert signal.getsignal(signal.SIGTERM) == old
    assert_as_before(before, {os.getpid()})


def dead_pid() -> int:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    return next(p for p in range(pid_max - 1, 1, -1) if not os.path.exists(f"/proc/{p}"))


def test_stale_instances_of_dead_processes_are_removed_and_live_ones_kept(before):
    s = session_or_skip()
    s.close()
    root = find_tracefs() or ""
    mounted_before = root != ""
    if not mounted_before:
        s = session_or_skip()                      # keep tracefs mounted meanwhile
    base = Path(find_tracefs() or "", "instances")
    dead = base / f"mmulib-{dead_pid()}-0badc0de"
    alive = base / f"mmulib-{os.getpid()}-0badc0de"
    os.mkdir(dead)
    os.mkdir(alive)
    try:
        with TraceSession(TRACE_EVENTS) as t:
            assert t.stale_removed == [dead.name]
        assert not dead.exists() and alive.exists()
    finally:
        for d in (dead, alive):
            if d.exists():
                os.rmdir(d)
        if not mounted_before:
            s.close()
    assert_as_before(before, {os.getpid()})


def test_events_of_other_threads_are_not_recorded(before):
    s = session_or_skip([SYSCALL_EVENT])
    try:
        other: list[int] = []

        def work() -> None:
            other.append(threading.get_native_id())
            for _ in range(200):
                os.getppid()

        t = threading.Thread(target=work)
        t.start()
        t.join()
        raw = [e for cpu in s.cpus() for e in s._drain_cpu(cpu)]   # before the pid check
        assert raw and {e.pid for e in raw} == {threading.get_native_id()}
        assert other[0] not in {e.pid for e in raw}
    finally:
        s.close()
    assert_as_before(before, {os.getpid()})


def test_draining_stops_when_the_reading_itself_is_traced(before):
    # Each read() of trace_pipe_raw is a syscall of this thread, so with raw_syscalls
    # enabled the buffer of this CPU never runs dry: the drain must stop after one buffer's
    # worth of sub-buffers instead of filling memory.
    cpus = os.sched_getaffinity(0)
    cpu = min(cpus)
    os.sched_setaffinity(0, {cpu})
    try:
        s = session_or_skip([SYSCALL_EVENT])
        try:
            limit = s._max_pages(s.page_size)
            for _ in range(3):
                start = time.monotonic()
                events = s._drain_cpu(cpu)
                assert time.monotonic() - start < 10
                assert len(events) <= limit * s.page_size // 16
        finally:
            s.close()
    finally:
        os.sched_setaffinity(0, cpus)
    assert_as_before(before, {os.getpid()})


def test_a_buffer_overrun_is_an_error(before):
    s = session_or_skip([SYSCALL_EVENT], buffer_kb=8)
    try:
        for _ in range(100_000):
            os.getppid()
        with pytest.raises(TraceOverrun, match=r"cpu\d+: the ring buffer lost events"):
            s.read()
    finally:
        s.close()
    assert_as_before(before, {os.getpid()})


CHILD = textwrap.dedent("""
    from mmulib.live.probe import run_script
    ops = [{"op": "run"}] + [{"op": "mov_cr3", "value": hex(0x102000 + 0x1000 * (i % 6))}
                             for i in range(4000)]
    run_script({"sregs": {"cr0": "0x80010011", "cr4": "0x20", "efer": "0xd00",
                          "cr3": "0x102000"}, "ops": ops})
    print("finished")
""")


def run_child_and_signal(sig: int) -> tuple[subprocess.Popen, str]:
    """Start a long probe in a child, wait until its instance exists, then send ``sig``."""
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    name = ""
    while not name and time.monotonic() < deadline and child.poll() is None:
        root = find_tracefs()
        if root:
            name = next((n for n in os.listdir(Path(root, "instances"))
                         if instance_pid(n) == child.pid), "")
        time.sleep(0.005)
    assert name, f"the child never created its instance: {child.communicate()}"
    time.sleep(0.3)                                # well inside the ~1 s of guest runs
    child.send_signal(sig)
    child.wait(timeout=60)
    return child, name


@pytest.mark.kvm
@pytest.mark.parametrize(("sig", "returncode"), [(signal.SIGTERM, 128 + signal.SIGTERM),
                                                 (signal.SIGINT, -signal.SIGINT)])
def test_a_probe_killed_mid_run_leaves_tracefs_as_it_was(before, sig, returncode):
    try:
        preflight()
    except LiveUnavailable as exc:
        pytest.skip(str(exc))
    child, name = run_child_and_signal(sig)
    out, err = child.communicate()
    assert child.returncode == returncode, err
    assert "finished" not in out                   # it really was stopped mid-run
    assert name not in snapshot().get("instances", "")
    assert_as_before(before, {os.getpid(), child.pid})


@pytest.mark.kvm
def test_a_sigkilled_probe_is_cleaned_up_by_the_next_session(before):
    try:
        preflight()
    except LiveUnavailable as exc:
        pytest.skip(str(exc))
    child, name = run_child_and_signal(signal.SIGKILL)
    assert child.returncode == -signal.SIGKILL
    root = find_tracefs()
    assert root is not None and name in os.listdir(Path(root, "instances"))   # left behind
    with TraceSession(TRACE_EVENTS) as t:
        assert name in t.stale_removed
    pids = {os.getpid(), child.pid}
    if before["mounted"] == "no" and not foreign_instances(snapshot(), pids):
        # SIGKILL gave the child no chance to unmount the tracefs it mounted
        subprocess.run(["umount", root], check=True)
    assert_as_before(before, pids)
