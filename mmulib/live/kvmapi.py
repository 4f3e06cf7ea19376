"""The KVM ioctls a live probe needs, with the standard library only (fcntl, mmap, ctypes).

Layouts and request numbers follow ``include/uapi/linux/kvm.h`` and
``arch/x86/include/uapi/asm/kvm.h`` (6.19 tree); the request numbers are the kernel's
``_IO``/``_IOR``/``_IOW``/``_IOWR`` encodings over ``KVMIO`` (0xAE), so they are computed here
rather than copied.  Every object is a context manager and closes its file descriptors and
mappings in all cases; :class:`Kvm` closes the VMs it created, and a :class:`Vm` its vCPUs and
its guest memory, in the order the kernel wants (vCPUs, then the VM, then the memory the
memslots pointed at).

>>> hex(KVM_GET_SREGS), hex(KVM_SET_CPUID2)
('0x8138ae83', '0x4008ae90')
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import struct
from dataclasses import dataclass, field

from .errors import HostRefused, LiveUnavailable, container_hint

__all__ = [
    "KVM_DEVICE", "KVM_API_VERSION", "KVM_CAP_X86_SMM", "KVM_CAP_NR_MEMSLOTS",
    "KVM_GET_API_VERSION", "KVM_CREATE_VM", "KVM_CHECK_EXTENSION", "KVM_GET_VCPU_MMAP_SIZE",
    "KVM_GET_SUPPORTED_CPUID", "KVM_SET_USER_MEMORY_REGION", "KVM_CREATE_VCPU", "KVM_RUN",
    "KVM_GET_REGS", "KVM_SET_REGS", "KVM_GET_SREGS", "KVM_SET_SREGS", "KVM_SET_CPUID2",
    "KVM_GET_CPUID2",
    "KVM_SMI", "EXIT_REASONS", "KvmRegs", "KvmSegment", "KvmDtable", "KvmSregs", "CpuidEntry",
    "KvmExit", "GuestMemory", "Kvm", "Vm", "Vcpu",
]

KVM_DEVICE = "/dev/kvm"
KVM_API_VERSION = 12          # include/uapi/linux/kvm.h; unchanged since 2.6.22
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_X86_SMM = 117

_KVMIO = 0xAE


def _ioc(direction: int, nr: int, size: int) -> int:
    """The kernel's _IOC(dir, KVMIO, nr, size) (include/uapi/asm-generic/ioctl.h)."""
    return (direction << 30) | (size << 16) | (_KVMIO << 8) | nr


class KvmRegs(ctypes.Structure):
    """struct kvm_regs (arch/x86/include/uapi/asm/kvm.h), 144 bytes."""

    _fields_ = [(n, ctypes.c_uint64) for n in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")]


class KvmSegment(ctypes.Structure):
    """struct kvm_segment, 24 bytes."""

    _fields_ = [("base", ctypes.c_uint64), ("limit", ctypes.c_uint32),
                ("selector", ctypes.c_uint16), ("type", ctypes.c_uint8),
                ("present", ctypes.c_uint8), ("dpl", ctypes.c_uint8), ("db", ctypes.c_uint8),
                ("s", ctypes.c_uint8), ("l", ctypes.c_uint8), ("g", ctypes.c_uint8),
                ("avl", ctypes.c_uint8), ("unusable", ctypes.c_uint8),
                ("padding", ctypes.c_uint8)]


class KvmDtable(ctypes.Structure):
    """struct kvm_dtable, 16 bytes."""

    _fields_ = [("base", ctypes.c_uint64), ("limit", ctypes.c_uint16),
                ("padding", ctypes.c_uint16 * 3)]


class KvmSregs(ctypes.Structure):
    """struct kvm_sregs, 312 bytes (KVM_NR_INTERRUPTS = 256 bits of interrupt bitmap)."""

    _fields_ = [*((n, KvmSegment) for n in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")),
                ("gdt", KvmDtable), ("idt", KvmDtable),
                *((n, ctypes.c_uint64) for n in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer",
                                                 "apic_base")),
                ("interrupt_bitmap", ctypes.c_uint64 * 4)]


class _Region(ctypes.Structure):
    """struct kvm_userspace_memory_region, 32 bytes."""

    _fields_ = [("slot", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("guest_phys_addr", ctypes.c_uint64), ("memory_size", ctypes.c_uint64),
                ("userspace_addr", ctypes.c_uint64)]


_CPUID_ENTRY = struct.Struct("<10I")   # struct kvm_cpuid_entry2: 7 u32 + 3 u32 padding
_CPUID_HEADER = struct.Struct("<II")   # struct kvm_cpuid2: nent, padding, entries[]

KVM_GET_API_VERSION = _ioc(0, 0x00, 0)
KVM_CREATE_VM = _ioc(0, 0x01, 0)
KVM_CHECK_EXTENSION = _ioc(0, 0x03, 0)
KVM_GET_VCPU_MMAP_SIZE = _ioc(0, 0x04, 0)
KVM_GET_SUPPORTED_CPUID = _ioc(3, 0x05, _CPUID_HEADER.size)
KVM_CREATE_VCPU = _ioc(0, 0x41, 0)
KVM_SET_USER_MEMORY_REGION = _ioc(1, 0x46, ctypes.sizeof(_Region))
KVM_RUN = _ioc(0, 0x80, 0)
KVM_GET_REGS = _ioc(2, 0x81, ctypes.sizeof(KvmRegs))
KVM_SET_REGS = _ioc(1, 0x82, ctypes.sizeof(KvmRegs))
KVM_GET_SREGS = _ioc(2, 0x83, ctypes.sizeof(KvmSregs))
KVM_SET_SREGS = _ioc(1, 0x84, ctypes.sizeof(KvmSregs))
KVM_SET_CPUID2 = _ioc(1, 0x90, _CPUID_HEADER.size)
KVM_GET_CPUID2 = _ioc(3, 0x91, _CPUID_HEADER.size)
KVM_SMI = _ioc(0, 0xB7, 0)

EXIT_REASONS = {
    0: "UNKNOWN", 1: "EXCEPTION", 2: "IO", 3: "HYPERCALL", 4: "DEBUG", 5: "HLT", 6: "MMIO",
    7: "IRQ_WINDOW_OPEN", 8: "SHUTDOWN", 9: "FAIL_ENTRY", 10: "INTR", 17: "INTERNAL_ERROR",
    24: "SYSTEM_EVENT", 37: "NOTIFY", 39: "MEMORY_FAULT",
}
"""KVM_EXIT_* values (include/uapi/linux/kvm.h) that an x86 guest can produce here."""

# Offsets inside struct kvm_run: exit_reason after 8 bytes of input, the exit union at 32.
_RUN_EXIT_REASON = 8
_RUN_UNION = 32


@dataclass(frozen=True)
class CpuidEntry:
    """One struct kvm_cpuid_entry2."""

    function: int
    index: int
    flags: int
    eax: int
    ebx: int
    ecx: int
    edx: int


@dataclass(frozen=True)
class KvmExit:
    """Why KVM_RUN returned: the decoded ``exit_reason`` and the fields of its union member."""

    reason: int
    name: str
    port: int | None = None        # KVM_EXIT_IO
    direction: int | None = None   # KVM_EXIT_IO_IN = 0, KVM_EXIT_IO_OUT = 1
    data: bytes = b""              # KVM_EXIT_IO payload, or KVM_EXIT_MMIO data
    detail: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        extra = "" if self.port is None else f" port 0x{self.port:x} data {self.data.hex()}"
        more = " ".join(f"{k}=0x{v:x}" for k, v in sorted(self.detail.items()))
        return f"KVM_EXIT_{self.name}{extra}{(' ' + more) if more else ''}"


def _ioctl(fd: int, request: int, arg: int | ctypes.Structure | bytearray = 0,
           what: str = "") -> int:
    """ioctl() that turns an OSError into :class:`HostRefused` naming the request."""
    try:
        return fcntl.ioctl(fd, request, arg)
    except InterruptedError:
        raise
    except OSError as exc:
        raise HostRefused(f"{what or hex(request)} failed: {os.strerror(exc.errno)}") from exc


def _get_cpuid(fd: int, request: int, what: str) -> list[CpuidEntry]:
    """A struct kvm_cpuid2 ioctl, growing the buffer while the kernel answers E2BIG."""
    nent = 64
    while True:
        buf = bytearray(_CPUID_HEADER.pack(nent, 0)) + bytes(nent * _CPUID_ENTRY.size)
        try:
            fcntl.ioctl(fd, request, buf)
        except OSError as exc:
            if exc.errno == errno.E2BIG and nent < 4096:
                nent *= 2
                continue
            raise HostRefused(f"{what} failed: {os.strerror(exc.errno)}") from exc
        count, _ = _CPUID_HEADER.unpack_from(buf)
        return [CpuidEntry(*_CPUID_ENTRY.unpack_from(buf, 8 + i * _CPUID_ENTRY.size)[:7])
                for i in range(count)]


class GuestMemory:
    """Anonymous, page-aligned memory that a memslot maps at ``gpa``; bytes-like access."""

    def __init__(self, size: int, gpa: int = 0) -> None:
        self.size, self.gpa = size, gpa
        self.map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._anchor: ctypes.c_char | None = ctypes.c_char.from_buffer(self.map)
        self.address = ctypes.addressof(self._anchor)

    def write(self, gpa: int, data: bytes) -> None:
        off = gpa - self.gpa
        if off < 0 or off + len(data) > self.size:
            raise ValueError(f"guest write at 0x{gpa:x}+{len(data)} outside guest memory")
        self.map[off:off + len(data)] = data

    def read(self, gpa: int, size: int) -> bytes:
        off = gpa - self.gpa
        return bytes(self.map[off:off + size])

    def close(self) -> None:
        # Note, the ctypes view exports the buffer; mmap.close() refuses while it lives.
        self._anchor, self.address = None, 0
        self.map.close()


class Vcpu:
    """A vCPU fd with its mmap'ed struct kvm_run."""

    def __init__(self, fd: int, mmap_size: int) -> None:
        self.fd = fd
        self.run_map = mmap.mmap(fd, mmap_size, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)

    def get_regs(self) -> KvmRegs:
        regs = KvmRegs()
        _ioctl(self.fd, KVM_GET_REGS, regs, "KVM_GET_REGS")
        return regs

    def set_regs(self, regs: KvmRegs) -> None:
        _ioctl(self.fd, KVM_SET_REGS, regs, "KVM_SET_REGS")

    def get_sregs(self) -> KvmSregs:
        sregs = KvmSregs()
        _ioctl(self.fd, KVM_GET_SREGS, sregs, "KVM_GET_SREGS")
        return sregs

    def set_sregs(self, sregs: KvmSregs) -> None:
        _ioctl(self.fd, KVM_SET_SREGS, sregs, "KVM_SET_SREGS")

    def set_cpuid(self, entries: list[CpuidEntry]) -> None:
        """KVM_SET_CPUID2.  After the first KVM_RUN, KVM accepts only the CPUID it already
        has (``kvm_set_cpuid`` in ``arch/x86/kvm/cpuid.c``, 5.16+); see :meth:`get_cpuid`."""
        buf = bytearray(_CPUID_HEADER.pack(len(entries), 0))
        for e in entries:
            buf += _CPUID_ENTRY.pack(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx,
                                     0, 0, 0)
        _ioctl(self.fd, KVM_SET_CPUID2, buf, "KVM_SET_CPUID2")

    def get_cpuid(self) -> list[CpuidEntry]:
        """KVM_GET_CPUID2: the vCPU's CPUID as KVM holds it (dynamic bits included)."""
        return _get_cpuid(self.fd, KVM_GET_CPUID2, "KVM_GET_CPUID2")

    def smi(self) -> None:
        """Queue a system management interrupt (KVM_SMI; needs KVM_CAP_X86_SMM)."""
        _ioctl(self.fd, KVM_SMI, 0, "KVM_SMI")

    def run(self) -> KvmExit:
        """One KVM_RUN; the exit decoded from struct kvm_run."""
        try:
            fcntl.ioctl(self.fd, KVM_RUN, 0)
        except InterruptedError:
            return KvmExit(10, "INTR")
        except OSError as exc:
            raise HostRefused(f"KVM_RUN failed: {os.strerror(exc.errno)}") from exc
        return self._decode()

    def _decode(self) -> KvmExit:
        buf = self.run_map
        (reason,) = struct.unpack_from("<I", buf, _RUN_EXIT_REASON)
        name = EXIT_REASONS.get(reason, str(reason))
        u = _RUN_UNION
        if reason == 2:       # io: direction u8, size u8, port u16, count u32, data_offset u64
            direction, size, port, count, off = struct.unpack_from("<BBHIQ", buf, u)
            return KvmExit(reason, name, port, direction, bytes(buf[off:off + size * count]))
        if reason == 9:       # fail_entry: hardware_entry_failure_reason u64, cpu u32
            hw, cpu = struct.unpack_from("<QI", buf, u)
            return KvmExit(reason, name, detail={"hardware_entry_failure_reason": hw, "cpu": cpu})
        if reason == 17:      # internal: suberror u32, ndata u32, data[16] u64
            sub, ndata = struct.unpack_from("<II", buf, u)
            data = struct.unpack_from(f"<{min(ndata, 16)}Q", buf, u + 8)
            return KvmExit(reason, name, detail={"suberror": sub,
                                                 **{f"data{i}": d for i, d in enumerate(data)}})
        if reason == 1:       # ex: exception u32, error_code u32
            ex, code = struct.unpack_from("<II", buf, u)
            return KvmExit(reason, name, detail={"exception": ex, "error_code": code})
        if reason == 6:       # mmio: phys_addr u64, data[8], len u32, is_write u8
            phys, data, length, is_write = struct.unpack_from("<Q8sIB", buf, u)
            return KvmExit(reason, name, data=data[:length],
                           detail={"phys_addr": phys, "is_write": is_write})
        if reason in (0, 24):  # hw.hardware_exit_reason / system_event.type
            (val,) = struct.unpack_from("<Q" if reason == 0 else "<I", buf, u)
            return KvmExit(reason, name, detail={"value": val})
        return KvmExit(reason, name)

    def close(self) -> None:
        self.run_map.close()
        os.close(self.fd)


class Vm:
    """A VM fd, its vCPUs and the guest memory behind its memslots."""

    def __init__(self, fd: int, mmap_size: int) -> None:
        self.fd, self._mmap_size = fd, mmap_size
        self.vcpus: list[Vcpu] = []
        self.memory: list[GuestMemory] = []

    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION on the VM fd (what this VM, not just the module, offers)."""
        return _ioctl(self.fd, KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION")

    def add_memory(self, size: int, gpa: int = 0) -> GuestMemory:
        """Map ``size`` bytes of fresh anonymous memory at guest-physical ``gpa``."""
        mem = GuestMemory(size, gpa)
        self.memory.append(mem)
        self.set_region(len(self.memory) - 1, gpa, mem)
        return mem

    def set_region(self, slot: int, gpa: int, mem: GuestMemory | None) -> None:
        """KVM_SET_USER_MEMORY_REGION: map ``mem`` at ``gpa`` in ``slot``, or delete the slot.

        Deleting (``mem`` None) or moving a slot makes KVM flush the shadow pages of that
        memory (``kvm_arch_flush_shadow_memslot``); creating one does not.
        """
        size, address = (0, 0) if mem is None else (mem.size, mem.address)
        _ioctl(self.fd, KVM_SET_USER_MEMORY_REGION, _Region(slot, 0, gpa, size, address),
               "KVM_SET_USER_MEMORY_REGION")
        if mem is not None:
            mem.gpa = gpa

    def create_vcpu(self, vcpu_id: int = 0) -> Vcpu:
        fd = _ioctl(self.fd, KVM_CREATE_VCPU, vcpu_id, "KVM_CREATE_VCPU")
        try:
            vcpu = Vcpu(fd, self._mmap_size)
        except BaseException:
            os.close(fd)
            raise
        self.vcpus.append(vcpu)
        return vcpu

    def close(self) -> None:
        while self.vcpus:
            self.vcpus.pop().close()
        os.close(self.fd)
        while self.memory:
            self.memory.pop().close()

    def __enter__(self) -> Vm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Kvm:
    """The open ``/dev/kvm`` system fd.

    Raises:
        LiveUnavailable: no device node, no permission, or an API version other than 12.
    """

    def __init__(self, device: str = KVM_DEVICE) -> None:
        try:
            self.fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise LiveUnavailable(
                f"{device} does not exist: this machine has no KVM (modprobe kvm_intel or "
                "kvm_amd on a host with virtualization enabled)"
                + container_hint(f"start it with --device {device}")) from None
        except PermissionError:
            raise LiveUnavailable(
                f"no permission to open {device}: add yourself to its group "
                "(sudo usermod -aG kvm $USER, then log in again) or run as root") from None
        except OSError as exc:
            raise LiveUnavailable(f"cannot open {device}: {os.strerror(exc.errno)}") from None
        self.vms: list[Vm] = []
        version = fcntl.ioctl(self.fd, KVM_GET_API_VERSION, 0)
        if version != KVM_API_VERSION:
            self.close()
            raise LiveUnavailable(f"{device} speaks KVM API {version}, not {KVM_API_VERSION}")
        self.api_version = version
        self.vcpu_mmap_size = fcntl.ioctl(self.fd, KVM_GET_VCPU_MMAP_SIZE, 0)

    def check_extension(self, cap: int) -> int:
        return _ioctl(self.fd, KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION")

    def supported_cpuid(self) -> list[CpuidEntry]:
        """KVM_GET_SUPPORTED_CPUID: every leaf and bit KVM can offer a guest."""
        return _get_cpuid(self.fd, KVM_GET_SUPPORTED_CPUID, "KVM_GET_SUPPORTED_CPUID")

    def create_vm(self, machine_type: int = 0) -> Vm:
        fd = _ioctl(self.fd, KVM_CREATE_VM, machine_type, "KVM_CREATE_VM")
        vm = Vm(fd, self.vcpu_mmap_size)
        self.vms.append(vm)
        return vm

    def close(self) -> None:
        try:
            while self.vms:
                self.vms.pop().close()
        finally:
            os.close(self.fd)

    def __enter__(self) -> Kvm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
