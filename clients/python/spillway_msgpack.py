"""msgpack on the Python standard library only: what spillway's batch routes speak.

    packb({"blocks": [{"index": 0, "data": b"..."}]})   # a batch-write body
    unpackb(answer)                                      # a batch-read answer

unpackb decodes every msgpack type (ext values come back as ExtType); bin values come back as
memoryviews of the buffer given, without copying, so a batch of blocks is read in place.
"""

from __future__ import annotations

import struct
from typing import Any


def packb(v: Any) -> bytes:
    """Encodes None, bools, ints, floats (as float 64), str, bytes-like (as bin), lists, tuples
    and dicts, each in its shortest form but floats. Bin values are copied once, into the result."""
    parts: list[Any] = []
    _pack(v, parts)
    return b"".join(parts)


def _pack(v: Any, parts: list) -> None:
    """Appends v's encoding to parts, bin values as views of themselves."""
    if v is None:
        parts.append(b"\xc0")
    elif v is True or v is False:
        parts.append(b"\xc3" if v else b"\xc2")
    elif isinstance(v, int):
        parts.append(_int(v))
    elif isinstance(v, float):
        parts.append(b"\xcb" + struct.pack(">d", v))
    elif isinstance(v, str):
        raw = v.encode()
        parts += (_head(len(raw), 0xA0, 32, b"\xd9", b"\xda", b"\xdb"), raw)
    elif isinstance(v, (bytes, bytearray, memoryview)):
        view = memoryview(v).cast("B")
        parts += (_head(len(view), None, 0, b"\xc4", b"\xc5", b"\xc6"), view)
    elif isinstance(v, (list, tuple)):
        parts.append(_head(len(v), 0x90, 16, None, b"\xdc", b"\xdd"))
        for x in v:
            _pack(x, parts)
    elif isinstance(v, dict):
        parts.append(_head(len(v), 0x80, 16, None, b"\xde", b"\xdf"))
        for k, x in v.items():
            _pack(k, parts)
            _pack(x, parts)
    else:
        raise TypeError(f"msgpack: cannot encode {type(v).__name__}")


def _int(v: int) -> bytes:
    if 0 <= v <= 0x7F:
        return bytes([v])
    if -32 <= v < 0:
        return struct.pack(">b", v)
    if 0 <= v <= 0xFF:
        return b"\xcc" + struct.pack(">B", v)
    if 0 <= v <= 0xFFFF:
        return b"\xcd" + struct.pack(">H", v)
    if 0 <= v <= 0xFFFFFFFF:
        return b"\xce" + struct.pack(">I", v)
    if v >= 0:
        return b"\xcf" + struct.pack(">Q", v)
    return b"\xd3" + struct.pack(">q", v)


def _head(n: int, fix: int | None, fix_limit: int, tag8: bytes | None, tag16: bytes, tag32: bytes) -> bytes:
    """A length's header in its shortest form: fix (below fix_limit), 8-, 16- or 32-bit."""
    if fix is not None and n < fix_limit:
        return bytes([fix | n])
    if tag8 is not None and n < 0x100:
        return tag8 + bytes([n])
    if n < 0x10000:
        return tag16 + struct.pack(">H", n)
    return tag32 + struct.pack(">I", n)


class ExtType:
    def __init__(self, code: int, data: bytes):
        self.code = code
        self.data = data

    def __repr__(self) -> str:
        return f"ExtType({self.code}, {len(self.data)} bytes)"


def unpackb(data: Any) -> Any:
    mv = memoryview(data)
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    value, end = _decode(mv, 0)
    if end != len(mv):
        raise ValueError(f"msgpack: {len(mv) - end} bytes after the value")
    return value


def _take(mv: memoryview, i: int, n: int) -> memoryview:
    if i + n > len(mv):
        raise ValueError(f"msgpack: truncated at byte {i} (wanted {n} more, have {len(mv) - i})")
    return mv[i:i + n]


def _uint(mv: memoryview, i: int, size: int) -> tuple[int, int]:
    return int.from_bytes(_take(mv, i, size), "big"), i + size


def _decode(mv: memoryview, i: int) -> tuple[Any, int]:
    if i >= len(mv):
        raise ValueError("msgpack: truncated")
    b = mv[i]
    i += 1
    if b <= 0x7F:
        return b, i
    if b >= 0xE0:
        return b - 0x100, i
    if 0x80 <= b <= 0x8F:
        return _map(mv, i, b & 0x0F)
    if 0x90 <= b <= 0x9F:
        return _array(mv, i, b & 0x0F)
    if 0xA0 <= b <= 0xBF:
        n = b & 0x1F
        return str(_take(mv, i, n), "utf-8"), i + n
    if b == 0xC0:
        return None, i
    if b == 0xC2:
        return False, i
    if b == 0xC3:
        return True, i
    if b in (0xC4, 0xC5, 0xC6):  # bin 8/16/32
        n, i = _uint(mv, i, {0xC4: 1, 0xC5: 2, 0xC6: 4}[b])
        return _take(mv, i, n), i + n
    if b in (0xC7, 0xC8, 0xC9):  # ext 8/16/32
        n, i = _uint(mv, i, {0xC7: 1, 0xC8: 2, 0xC9: 4}[b])
        code = struct.unpack_from(">b", _take(mv, i, 1))[0]
        return ExtType(code, bytes(_take(mv, i + 1, n))), i + 1 + n
    if b == 0xCA:
        return struct.unpack_from(">f", _take(mv, i, 4))[0], i + 4
    if b == 0xCB:
        return struct.unpack_from(">d", _take(mv, i, 8))[0], i + 8
    if 0xCC <= b <= 0xCF:  # uint 8/16/32/64
        return _uint(mv, i, 1 << (b - 0xCC))
    if 0xD0 <= b <= 0xD3:  # int 8/16/32/64
        size = 1 << (b - 0xD0)
        return int.from_bytes(_take(mv, i, size), "big", signed=True), i + size
    if 0xD4 <= b <= 0xD8:  # fixext 1/2/4/8/16
        n = 1 << (b - 0xD4)
        code = struct.unpack_from(">b", _take(mv, i, 1))[0]
        return ExtType(code, bytes(_take(mv, i + 1, n))), i + 1 + n
    if b in (0xD9, 0xDA, 0xDB):  # str 8/16/32
        n, i = _uint(mv, i, {0xD9: 1, 0xDA: 2, 0xDB: 4}[b])
        return str(_take(mv, i, n), "utf-8"), i + n
    if b in (0xDC, 0xDD):
        n, i = _uint(mv, i, 2 if b == 0xDC else 4)
        return _array(mv, i, n)
    if b in (0xDE, 0xDF):
        n, i = _uint(mv, i, 2 if b == 0xDE else 4)
        return _map(mv, i, n)
    raise ValueError(f"msgpack: byte 0x{b:02x} at {i - 1} starts no value")


def _array(mv: memoryview, i: int, n: int) -> tuple[list, int]:
    out = []
    for _ in range(n):
        v, i = _decode(mv, i)
        out.append(v)
    return out, i


def _map(mv: memoryview, i: int, n: int) -> tuple[dict, int]:
    out = {}
    for _ in range(n):
        k, i = _decode(mv, i)
        v, i = _decode(mv, i)
        out[bytes(k) if isinstance(k, memoryview) else k] = v
    return out, i
