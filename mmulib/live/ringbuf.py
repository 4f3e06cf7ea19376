"""Decode tracefs binary output: event ``format`` files and ``trace_pipe_raw`` pages.

The text a tracepoint prints (its ``TP_printk``) drops most of a role word: the
``kvm_mmu_get_page`` line shows level, gpte size, quadrant, direct, access, invalid, efer_nx
and ad_disabled, but not cr0_wp, smep/smap_andnot_wp, guest_mode, passthrough or smm.  The
binary record holds the whole 32-bit ``role`` field, so the probe reads that instead.

Two self-descriptions make this independent of the kernel release:

* ``events/<system>/<event>/format`` lists every field with offset, size and signedness
  (written by ``trace_format_show()`` in ``kernel/trace/trace_events.c``);
  ``events/header_page`` does the same for the page header (timestamp, commit, data).
* Each ``per_cpu/cpuN/trace_pipe_raw`` read returns one ring-buffer sub-buffer: that header,
  then events that start with a 32-bit word ``type_len:5 | time_delta:27``
  (``kernel/trace/ring_buffer.c``, ``rb_update_event()``; ``events/header_event`` describes it):
  ``type_len`` 1..28 means 4*type_len bytes of data follow; 0 means the next 32 bits hold the
  length (including themselves) and the data follows them; 29 is padding (the rest of the
  page when time_delta is 0, otherwise a discarded event of ``array[0]`` bytes); 30 extends
  the time delta by ``array[0] << 27``; 31 is an absolute time stamp.  The commit word's bit 31
  says events were lost before this page, bit 30 that their count is stored after the data.

>>> fmt = parse_format(SAMPLE_FORMAT, "kvmmmu")
>>> fmt.name, fmt.id, fmt.fields["role"].offset, fmt.fields["created"].size
('kvm_mmu_get_page', 128, 24, 1)
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

__all__ = [
    "FieldSpec", "EventFormat", "PageLayout", "RawEvent", "Page", "parse_format",
    "parse_page_layout", "parse_page", "check_header_event", "SAMPLE_FORMAT",
    "TYPE_PADDING", "TYPE_TIME_EXTEND", "TYPE_TIME_STAMP", "MISSED_EVENTS", "MISSED_STORED",
]

TYPE_PADDING, TYPE_TIME_EXTEND, TYPE_TIME_STAMP = 29, 30, 31
MISSED_EVENTS, MISSED_STORED = 1 << 31, 1 << 30
_COMMIT_MASK = (1 << 27) - 1
_TS_SHIFT = 27
_ABS_TS_BITS = 59   # rb_fix_abs_ts(): an absolute stamp keeps the low 59 bits

SAMPLE_FORMAT = """name: kvm_mmu_get_page
ID: 128
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__u8 mmu_valid_gen;\toffset:8;\tsize:1;\tsigned:0;
\tfield:__u64 gfn;\toffset:16;\tsize:8;\tsigned:0;
\tfield:__u32 role;\toffset:24;\tsize:4;\tsigned:0;
\tfield:__u32 root_count;\toffset:28;\tsize:4;\tsigned:0;
\tfield:bool unsync;\toffset:32;\tsize:1;\tsigned:0;
\tfield:bool created;\toffset:33;\tsize:1;\tsigned:0;

print fmt: "%s %s", ...
"""
"""The 6.18 ``events/kvmmmu/kvm_mmu_get_page/format`` (as read on a 6.18 host), for tests."""

_FIELD_RE = re.compile(
    r"field:\s*(?P<decl>[^;]+);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);"
    r"(?:\s*signed:(?P<signed>\d+);)?")
_INT_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}


@dataclass(frozen=True)
class FieldSpec:
    """One ``field:`` line of a format file."""

    name: str
    offset: int
    size: int
    signed: bool
    array: bool = False

    def decode(self, data: bytes) -> int | bytes:
        """The field's value: an int for 1/2/4/8-byte scalars, raw bytes otherwise."""
        code = _INT_FORMATS.get(self.size)
        if code is None or self.array:
            return data[self.offset:self.offset + self.size]
        if self.signed:
            code = code.lower()
        return struct.unpack_from("<" + code, data, self.offset)[0]


@dataclass(frozen=True)
class EventFormat:
    """An event's id and field layout, from its ``format`` file."""

    system: str
    name: str
    id: int
    fields: dict[str, FieldSpec]

    def decode(self, data: bytes) -> dict[str, int | bytes]:
        return {name: spec.decode(data) for name, spec in self.fields.items()
                if spec.offset + spec.size <= len(data)}


def _fields(text: str) -> dict[str, FieldSpec]:
    out = {}
    for m in _FIELD_RE.finditer(text):
        declared = m["decl"].split()[-1]          # "gfn", or "comm[16]" for an array
        name = declared.split("[")[0]
        out[name] = FieldSpec(name, int(m["offset"]), int(m["size"]), m["signed"] == "1",
                              "[" in declared)
    return out


def parse_format(text: str, system: str) -> EventFormat:
    """Parse an ``events/<system>/<event>/format`` file."""
    name = re.search(r"^name:\s*(\S+)", text, re.M)
    ident = re.search(r"^ID:\s*(\d+)", text, re.M)
    if not name or not ident:
        raise ValueError("not an event format file (no name: or ID: line)")
    return EventFormat(system, name[1], int(ident[1]), _fields(text))


@dataclass(frozen=True)
class PageLayout:
    """Where ``events/header_page`` puts the time stamp, the commit word and the data."""

    timestamp_size: int = 8
    commit_offset: int = 8
    commit_size: int = 8
    data_offset: int = 16


def parse_page_layout(text: str) -> PageLayout:
    """Parse ``events/header_page``."""
    f = _fields(text)
    return PageLayout(f["timestamp"].size, f["commit"].offset, f["commit"].size,
                      f["data"].offset)


def check_header_event(text: str) -> None:
    """Refuse an ``events/header_event`` whose event header is not the one decoded here."""
    wanted = ("type_len    :    5 bits", "time_delta  :   27 bits", "type == 29",
              "type == 30", "type == 31")
    missing = [w for w in wanted if w not in text]
    if missing:
        raise ValueError(f"unexpected ring-buffer event header (missing {missing})")


@dataclass(frozen=True)
class RawEvent:
    """One data record: absolute time stamp (trace clock units), CPU, payload."""

    ts: int
    cpu: int
    data: bytes

    @property
    def type_id(self) -> int:
        return struct.unpack_from("<H", self.data)[0]


@dataclass(frozen=True)
class Page:
    """A decoded sub-buffer: its events and whether events were lost before it."""

    timestamp: int
    events: list[RawEvent]
    missed: bool
    missed_count: int | None


def parse_page(buf: bytes, cpu: int, layout: PageLayout = PageLayout()) -> Page:
    """Decode one sub-buffer read from ``per_cpu/cpu<cpu>/trace_pipe_raw``."""
    ts = page_ts = struct.unpack_from("<Q", buf, 0)[0]
    code = "<Q" if layout.commit_size == 8 else "<I"
    commit = struct.unpack_from(code, buf, layout.commit_offset)[0]
    size = commit & _COMMIT_MASK
    start = layout.data_offset
    end = min(start + size, len(buf))
    missed_count = None
    if commit & MISSED_STORED and end + layout.commit_size <= len(buf):
        missed_count = struct.unpack_from(code, buf, end)[0]
    events: list[RawEvent] = []
    pos = start
    while pos + 4 <= end:
        (word,) = struct.unpack_from("<I", buf, pos)
        type_len, delta = word & 0x1F, word >> 5
        if type_len == TYPE_PADDING:
            if delta == 0:
                break                                   # the rest of the page is empty
            pos += 4 + struct.unpack_from("<I", buf, pos + 4)[0]
            ts += delta
            continue
        if type_len == TYPE_TIME_EXTEND:
            ts += (struct.unpack_from("<I", buf, pos + 4)[0] << _TS_SHIFT) | delta
            pos += 8
            continue
        if type_len == TYPE_TIME_STAMP:
            stamp = (struct.unpack_from("<I", buf, pos + 4)[0] << _TS_SHIFT) | delta
            ts = stamp | (ts & ~((1 << _ABS_TS_BITS) - 1))
            pos += 8
            continue
        ts += delta
        if type_len == 0:
            length = struct.unpack_from("<I", buf, pos + 4)[0] - 4
            data_at = pos + 8
        else:
            length = type_len * 4
            data_at = pos + 4
        events.append(RawEvent(ts, cpu, bytes(buf[data_at:data_at + length])))
        pos = data_at + ((length + 3) & ~3)
    return Page(page_ts, events, bool(commit & MISSED_EVENTS),
                missed_count)
