"""A private tracefs instance that records a few KVM tracepoints and leaves nothing behind.

:class:`TraceSession` creates ``instances/mmulib-<pid>-<random>`` (its own ring buffer, its own
event enables, its own pid filter), enables only the events asked for, limits them to one
thread with ``set_event_pid``, and reads their binary records from
``per_cpu/cpuN/trace_pipe_raw`` (:mod:`mmulib.live.ringbuf`).  Nothing outside the instance is
written, except that tracefs is mounted when it is not, and unmounted again afterwards.

Cleaning up is the point of the class, so it happens on every way out:

* ``with`` exit, normal or by exception (including ``KeyboardInterrupt`` from Ctrl-C);
* SIGTERM and SIGHUP: the session's handler raises ``SystemExit(128 + signum)`` (or calls the
  handler that was there before), so the stack unwinds: open files close, then ``with`` exit
  or ``finally`` removes the instance.  The handler itself touches nothing, because at that
  moment a file of the instance may be open, and rmdir would fail;
* interpreter exit (``atexit``), for a session that was never closed;
* :meth:`TraceSession.close` blocks SIGINT, SIGTERM and SIGHUP while it works, so a second
  signal cannot cut the clean-up short (it is delivered when the clean-up is done);
* SIGKILL cannot be caught, so every new session first removes ``mmulib-<pid>-*`` instances
  whose process is gone.

Lost events are never silent: :meth:`TraceSession.read` raises :class:`TraceOverrun` when a
page says events were missed or when a CPU's ``stats`` file shows a new ``overrun``,
``commit overrun`` or ``dropped events`` count.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import LiveUnavailable, container_hint
from .ringbuf import EventFormat, check_header_event, parse_format, parse_page, parse_page_layout

__all__ = [
    "TRACEFS", "INSTANCE_PREFIX", "DEFAULT_EVENTS", "TraceEvent", "TraceOverrun",
    "TraceSession", "find_tracefs", "clean_stale_instances", "instance_pid", "snapshot",
]

TRACEFS = "/sys/kernel/tracing"
INSTANCE_PREFIX = "mmulib-"
DEFAULT_EVENTS = ("kvmmmu/kvm_mmu_get_page", "kvm/kvm_pio")
_INSTANCE_RE = re.compile(r"^mmulib-(\d+)-[0-9a-f]+$")
_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_BLOCKED = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
_STAT_KEYS = ("overrun", "commit overrun", "dropped events")


class TraceOverrun(RuntimeError):
    """Events were lost: the ring buffer overflowed or a reader missed a page."""


@dataclass(frozen=True)
class TraceEvent:
    """One decoded record: which event, where and when, who, and its fields."""

    system: str
    name: str
    cpu: int
    ts: int
    pid: int
    fields: dict[str, int | bytes]


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP while a file of the instance is open (main thread only).

    A handler that raises between ``open`` and the code that closes the file would leave it
    open until the process exits, and an instance with an open file cannot be removed.  The
    signals are delivered as soon as the file is closed again.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _mounts() -> list[tuple[str, str]]:
    with open("/proc/self/mounts") as f:
        return [(p[1], p[2]) for p in (line.split() for line in f) if len(p) > 2]


def find_tracefs() -> str | None:
    """Where tracefs is mounted (preferring ``/sys/kernel/tracing``), or None."""
    points = [m for m, fstype in _mounts() if fstype == "tracefs"]
    return TRACEFS if TRACEFS in points else (points[0] if points else None)


def _libc_call(name: str, *args: object) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _mount_tracefs() -> None:
    """mount -t tracefs nodev /sys/kernel/tracing, or LiveUnavailable saying why not."""
    hint = container_hint(f"run it with --privileged, or bind-mount the host's {TRACEFS}")
    if not os.path.isdir(TRACEFS):
        raise LiveUnavailable(f"tracefs is not mounted and {TRACEFS} does not exist: the kernel "
                              f"needs CONFIG_TRACING{hint}")
    try:
        _libc_call("mount", b"nodev", TRACEFS.encode(), b"tracefs", 0, None)
    except OSError as exc:
        raise LiveUnavailable(
            f"tracefs is not mounted and mounting it failed ({exc.strerror}): run as root, or "
            f"mount -t tracefs nodev {TRACEFS}{hint}") from None


def instance_pid(name: str) -> int | None:
    """The process id in an ``mmulib-<pid>-<hex>`` instance name, else None."""
    m = _INSTANCE_RE.match(name)
    return int(m[1]) if m else None


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def clean_stale_instances(root: str) -> list[str]:
    """Remove ``mmulib-<pid>-*`` instances whose process no longer exists; their names."""
    removed = []
    base = Path(root, "instances")
    for entry in sorted(os.listdir(base)):
        pid = instance_pid(entry)
        if pid is None or _alive(pid):
            continue
        try:
            os.rmdir(base / entry)
            removed.append(entry)
        except OSError:
            pass                     # someone still holds it open; the next run tries again
    return removed


def snapshot(pids: Iterable[int] | None = None) -> dict[str, str]:
    """What a session must leave as it found it: whether tracefs is mounted, the instances,
    and each buffer's event enables, pid filter, tracing switch and size.

    With ``pids``, the ``mmulib-<pid>-*`` instances of other processes (a concurrent run's
    probes) are left out, so two runs on one machine do not see each other.
    """
    root = find_tracefs()
    if root is None:
        return {"mounted": "no"}
    keep = None if pids is None else set(pids)
    names = [n for n in sorted(os.listdir(Path(root, "instances")))
             if keep is None or instance_pid(n) is None or instance_pid(n) in keep]
    out = {"mounted": root, "instances": "\n".join(names)}
    for buf in [Path(root)] + [Path(root, "instances", n) for n in names]:
        for name in ("set_event", "set_event_pid", "tracing_on", "buffer_size_kb", "trace_clock"):
            try:
                out[f"{buf.name}/{name}"] = (buf / name).read_text()
            except OSError as exc:
                out[f"{buf.name}/{name}"] = f"<{exc.strerror}>"
    return out


class TraceSession:
    """A private tracefs instance recording ``events`` from one thread.

    Args:
        events: ``"system/event"`` names, e.g. ``"kvmmmu/kvm_mmu_get_page"``.
        tid: the thread whose events are kept (default: the calling thread).
        buffer_kb: per-CPU buffer size; None keeps the instance default.

    Raises:
        LiveUnavailable: tracefs cannot be mounted or written, or an event does not exist.
    """

    def __init__(self, events: Sequence[str] = DEFAULT_EVENTS, *, tid: int | None = None,
                 buffer_kb: int | None = None) -> None:
        self.events = tuple(events)
        self.tid = threading.get_native_id() if tid is None else tid
        self.buffer_kb = buffer_kb
        self.root: str | None = None
        self.path: Path | None = None
        self.mounted_here = False
        self.stale_removed: list[str] = []
        self.formats: dict[int, EventFormat] = {}
        self._old_handlers: dict[int, object] = {}
        self._stats: dict[int, dict[str, int]] = {}
        self._closed = True

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> TraceSession:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Mount tracefs if needed, create and configure the instance.

        Signals are held meanwhile; one that arrives is delivered when the session is
        complete (and then closed by the unwinding or, at the latest, by ``atexit``).
        """
        with _signals_held():
            self._start()

    def _start(self) -> None:
        root = find_tracefs()
        if root is None:
            _mount_tracefs()
            root, self.mounted_here = TRACEFS, True
        self.root, self._closed = root, False
        atexit.register(self.close)
        self._install_handlers()
        try:
            self._check_events(root)
            self.stale_removed = clean_stale_instances(root)
            name = f"{INSTANCE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
            self.path = Path(root, "instances", name)
            try:
                os.mkdir(self.path)
            except PermissionError:
                self.path = None
                raise LiveUnavailable(f"no permission to create a tracefs instance in {root}"
                                      "/instances: run as root") from None
            self._configure()
        except BaseException:
            self.close()
            raise

    def _check_events(self, root: str) -> None:
        for ev in self.events:
            fmt = Path(root, "events", ev, "format")
            try:
                text = fmt.read_text()
            except FileNotFoundError:
                system, _, name = ev.partition("/")
                raise LiveUnavailable(
                    f"the tracepoint {system}:{name} is missing from {root}/events: load the "
                    "KVM module (modprobe kvm_intel, kvm_amd or kvm_pvm), which defines it"
                ) from None
            except PermissionError:
                raise LiveUnavailable(f"no permission to read {fmt}: run as root") from None
            f = parse_format(text, ev.partition("/")[0])
            self.formats[f.id] = f
        check_header_event(Path(root, "events", "header_event").read_text())
        self.layout = parse_page_layout(Path(root, "events", "header_page").read_text())

    def _write(self, rel: str, value: str) -> None:
        assert self.path is not None
        with _signals_held(), open(self.path / rel, "w") as f:
            f.write(value)

    def _read(self, rel: str) -> str:
        assert self.path is not None
        with _signals_held(), open(self.path / rel) as f:
            return f.read()

    def _configure(self) -> None:
        assert self.path is not None
        self._write("tracing_on", "0")
        if "mono" in self._read("trace_clock").split():
            self._write("trace_clock", "mono")    # one clock for all CPUs: a total order
        if self.buffer_kb:
            self._write("buffer_size_kb", str(self.buffer_kb))
        self._write("set_event_pid", str(self.tid))
        for ev in self.events:
            self._write(f"events/{ev}/enable", "1")
        self._stats = {cpu: self._cpu_stats(cpu) for cpu in self.cpus()}
        self._write("tracing_on", "1")

    def close(self) -> None:
        """Remove the instance, restore signal handlers, unmount what was mounted; idempotent."""
        if self._closed:
            return
        main = threading.current_thread() is threading.main_thread()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED) if main else None
        try:
            self._close()
        finally:
            if mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def _close(self) -> None:
        self._closed = True
        atexit.unregister(self.close)
        try:
            if self.path is not None:
                path, self.path = self.path, None
                self._remove(path)
        finally:
            self._restore_handlers()
            if self.mounted_here:
                self.mounted_here = False
                try:
                    _libc_call("umount2", TRACEFS.encode(), 0)
                except OSError:
                    pass                 # another process started using it meanwhile

    @staticmethod
    def _remove(path: Path) -> None:
        """Switch the instance off and remove it (rmdir retries while a file is open)."""
        for rel, value in (("tracing_on", "0"), ("events/enable", "0")):
            try:
                with open(path / rel, "w") as f:
                    f.write(value)
            except OSError:
                pass
        for attempt in range(250):
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or attempt == 249:
                    raise OSError(exc.errno, f"cannot remove {path}: {exc.strerror} (a file "
                                  "in it is still open)") from None
                time.sleep(0.02)

    # -- signals ---------------------------------------------------------------------------

    def _install_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return                       # only the main thread may set handlers
        for sig in _HANDLED_SIGNALS:
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_handlers(self) -> None:
        for sig, old in self._old_handlers.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, old)  # type: ignore[arg-type]
        self._old_handlers.clear()

    def _on_signal(self, signum: int, frame: object) -> None:
        previous = self._old_handlers.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise SystemExit(128 + signum)

    # -- reading ---------------------------------------------------------------------------

    def cpus(self) -> list[int]:
        assert self.path is not None
        return sorted(int(d[3:]) for d in os.listdir(self.path / "per_cpu") if d[3:].isdigit())

    def _cpu_stats(self, cpu: int) -> dict[str, int]:
        assert self.path is not None
        text = self._read(f"per_cpu/cpu{cpu}/stats")
        found = dict(re.findall(r"^([a-z ]+):\s*(\d+)", text, re.M))
        return {k: int(found.get(k, 0)) for k in _STAT_KEYS}

    def _drain_cpu(self, cpu: int) -> list[TraceEvent]:
        """Every record in one CPU's buffer, consumed (the pid is not checked here).

        Note, at most one buffer's worth of sub-buffers is read.  Everything recorded before
        the drain started fits in that; more only comes when the reading itself is traced
        (e.g. ``raw_syscalls`` for this thread: each ``read`` records an event, so the buffer
        never runs dry and an unbounded loop would fill memory).
        """
        assert self.path is not None
        size = self.page_size
        pages = []
        with _signals_held():
            fd = os.open(self.path / "per_cpu" / f"cpu{cpu}" / "trace_pipe_raw",
                         os.O_RDONLY | os.O_NONBLOCK)
            try:
                for _ in range(self._max_pages(size)):
                    try:
                        buf = os.read(fd, size)
                    except BlockingIOError:
                        break
                    if not buf:
                        break
                    pages.append(buf)
            finally:
                os.close(fd)
        events = []
        for page in (parse_page(buf, cpu, self.layout) for buf in pages):
            if page.missed:
                lost = "" if page.missed_count is None else f" ({page.missed_count} events)"
                raise TraceOverrun(f"cpu{cpu}: the ring buffer lost events{lost}")
            for raw in page.events:
                fmt = self.formats.get(raw.type_id)
                if fmt is not None:
                    fields = fmt.decode(raw.data)
                    events.append(TraceEvent(fmt.system, fmt.name, cpu, raw.ts,
                                             int(fields["common_pid"]), fields))
        return events

    def _max_pages(self, page_size: int) -> int:
        """Sub-buffers one CPU's buffer holds, plus the reader's own and one spare."""
        text = self._read("buffer_size_kb")
        found = re.search(r"expanded: (\d+)", text) or re.match(r"\s*(\d+)", text)
        kb = int(found[1]) if found else 1408
        return kb * 1024 // page_size + 2

    @property
    def page_size(self) -> int:
        assert self.path is not None
        try:
            return int(self._read("buffer_subbuf_size_kb")) * 1024
        except FileNotFoundError:   # before 6.8 a sub-buffer is one page
            return os.sysconf("SC_PAGESIZE")

    def read(self) -> list[TraceEvent]:
        """Every record since the last read, oldest first, from this session's thread only.

        Raises:
            TraceOverrun: anything was lost.
        """
        events: list[TraceEvent] = []
        for cpu in self.cpus():
            events.extend(self._drain_cpu(cpu))
            now = self._cpu_stats(cpu)
            before = self._stats.get(cpu, dict.fromkeys(_STAT_KEYS, 0))
            grown = {k: now[k] - before[k] for k in _STAT_KEYS if now[k] > before[k]}
            if grown:
                raise TraceOverrun(f"cpu{cpu}: the ring buffer lost events ({grown})")
        events.sort(key=lambda e: (e.ts, e.cpu))
        return [e for e in events if e.pid == self.tid]
