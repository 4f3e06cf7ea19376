"""Decoding tracefs formats and trace_pipe_raw pages, on hand-built bytes (no tracefs needed)."""

from __future__ import annotations

import struct

import pytest

from mmulib.live.ringbuf import (
    MISSED_EVENTS, MISSED_STORED, SAMPLE_FORMAT, PageLayout, check_header_event, parse_format,
    parse_page, parse_page_layout,
)

# events/header_page and events/header_event as a 6.18 x86-64 host has them
HEADER_PAGE = """\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;
\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;
\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;
\tfield: char data;\toffset:16;\tsize:4080;\tsigned:0;
"""
HEADER_EVENT = """# compressed entry header
\ttype_len    :    5 bits
\ttime_delta  :   27 bits
\tarray       :   32 bits

\tpadding     : type == 29
\ttime_extend : type == 30
\ttime_stamp : type == 31
\tdata max type_len  == 28
"""
MASK27 = (1 << 27) - 1


def get_page_payload(pid: int, gfn: int, role: int, created: bool) -> bytes:
    """A kvm_mmu_get_page record laid out as SAMPLE_FORMAT says (34 bytes, padded to 36)."""
    buf = bytearray(36)
    struct.pack_into("<HBBi", buf, 0, 128, 0, 1, pid)
    struct.pack_into("<B", buf, 8, 0)
    struct.pack_into("<QII??", buf, 16, gfn, role, 0, False, created)
    return bytes(buf)


def small(delta: int, payload: bytes) -> bytes:
    assert len(payload) % 4 == 0 and len(payload) <= 112
    return struct.pack("<I", len(payload) // 4 | delta << 5) + payload


def big(delta: int, payload: bytes) -> bytes:
    return struct.pack("<II", delta << 5, len(payload) + 4) + payload


def extend(delta: int) -> bytes:
    return struct.pack("<II", 30 | (delta & MASK27) << 5, delta >> 27)


def absolute(ts: int) -> bytes:
    return struct.pack("<II", 31 | (ts & MASK27) << 5, ts >> 27)


def discarded(delta: int, size: int) -> bytes:
    """A discarded event: array[0] holds its data length, counting array[0] itself."""
    return struct.pack("<II", 29 | delta << 5, size) + bytes(size - 4)


def page(ts: int, data: bytes, flags: int = 0, tail: bytes = b"") -> bytes:
    body = struct.pack("<QQ", ts, len(data) | flags) + data + tail
    return body + bytes(4096 - len(body))


def test_format_file_gives_id_offsets_sizes_and_signedness():
    fmt = parse_format(SAMPLE_FORMAT, "kvmmmu")
    assert (fmt.system, fmt.name, fmt.id) == ("kvmmmu", "kvm_mmu_get_page", 128)
    assert [(f.name, f.offset, f.size, f.signed) for f in fmt.fields.values()] == [
        ("common_type", 0, 2, False), ("common_flags", 2, 1, False),
        ("common_preempt_count", 3, 1, False), ("common_pid", 4, 4, True),
        ("mmu_valid_gen", 8, 1, False), ("gfn", 16, 8, False), ("role", 24, 4, False),
        ("root_count", 28, 4, False), ("unsync", 32, 1, False), ("created", 33, 1, False)]


def test_record_fields_decode_from_their_offsets():
    fmt = parse_format(SAMPLE_FORMAT, "kvmmmu")
    fields = fmt.decode(get_page_payload(-5, 0x102, 0x3704, True))
    assert fields == {"common_type": 128, "common_flags": 0, "common_preempt_count": 1,
                      "common_pid": -5, "mmu_valid_gen": 0, "gfn": 0x102, "role": 0x3704,
                      "root_count": 0, "unsync": 0, "created": 1}


def test_array_fields_decode_as_bytes():
    text = ("name: x\nID: 7\nformat:\n\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n"
            "\tfield:u32 n;\toffset:24;\tsize:4;\tsigned:0;\n")
    fmt = parse_format(text, "s")
    assert fmt.fields["comm"].array and not fmt.fields["n"].array
    data = bytes(8) + b"python\0\0\0\0\0\0\0\0\0\0" + struct.pack("<I", 9)
    assert fmt.decode(data) == {"comm": b"python" + bytes(10), "n": 9}


def test_not_a_format_file_is_refused():
    with pytest.raises(ValueError, match="not an event format file"):
        parse_format("hello", "x")


def test_header_page_and_header_event():
    assert parse_page_layout(HEADER_PAGE) == PageLayout(8, 8, 8, 16)
    check_header_event(HEADER_EVENT)
    with pytest.raises(ValueError, match="unexpected ring-buffer event header"):
        check_header_event(HEADER_EVENT.replace("27 bits", "26 bits"))


def test_page_with_every_kind_of_event_header():
    a = get_page_payload(42, 0x102, 0x3704, True)
    b = bytes(range(120))                       # longer than 112 bytes: length in array[0]
    c = get_page_payload(42, 0x103, 0x3704, False)
    data = (small(5, a) + extend((1 << 27) + 3) + big(2, b) + discarded(7, 12)
            + absolute(0x500000000) + small(1, c) + struct.pack("<I", 29))
    p = parse_page(page(1000, data, tail=small(1, a)), cpu=3)
    assert not p.missed and p.missed_count is None and p.timestamp == 1000
    assert [(e.ts, e.cpu, len(e.data)) for e in p.events] == [
        (1005, 3, 36), (1005 + (1 << 27) + 3 + 2, 3, 120), (0x500000001, 3, 36)]
    # (the discarded event's delta counts, as libtraceevent's kbuffer counts it; the absolute
    # stamp then replaces the running time)
    assert p.events[0].data == a and p.events[1].data == b and p.events[2].data == c
    assert p.events[0].type_id == 128


def test_the_commit_size_bounds_the_events():
    a = get_page_payload(1, 1, 1, True)
    p = parse_page(page(0, small(1, a), tail=small(1, a)), cpu=0)
    assert len(p.events) == 1


def test_missed_events_are_flagged_with_their_count_when_stored():
    a = get_page_payload(1, 1, 1, True)
    p = parse_page(page(0, small(1, a), MISSED_EVENTS | MISSED_STORED,
                        tail=struct.pack("<Q", 17)), cpu=0)
    assert p.missed and p.missed_count == 17 and len(p.events) == 1
    p = parse_page(page(0, small(1, a), MISSED_EVENTS), cpu=0)
    assert p.missed and p.missed_count is None
