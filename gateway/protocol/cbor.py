"""Strict CBOR (RFC 8949) profile used on the device link.

Encoding goes through `cbor2` (after a profile check); decoding is our own small strict decoder
because `cbor2.loads` accepts indefinite lengths, floats, tags and ignores nothing we must reject.
The check order here mirrors `firmware/core/cbor.c` so both sides yield the same error code.

Profile: unsigned/negative integers, byte strings, UTF-8 text strings, arrays, maps with integer or
text keys, false/true/null; definite lengths only; nesting depth <= `MAX_DEPTH`.
"""

from __future__ import annotations

from typing import Any

import cbor2

from .errors import ErrorCode, ProtocolError

MAX_DEPTH = 8
"""Deepest container nesting accepted (the top-level array counts as depth 1)."""

_UINT_MAX = (1 << 64) - 1
_NINT_MIN = -(1 << 64)


def dumps(value: Any, *, max_depth: int = MAX_DEPTH) -> bytes:
    """Encode `value` with cbor2 after checking it stays inside the profile (no floats, no tags)."""
    _check_encodable(value, 0, max_depth)
    return cbor2.dumps(value)


def _check_encodable(value: Any, depth: int, max_depth: int) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not _NINT_MIN <= value <= _UINT_MAX:
            raise ValueError(f"integer {value} outside CBOR major types 0/1")
        return
    if isinstance(value, bytes | str):
        return
    if isinstance(value, list | tuple | dict):
        if depth + 1 > max_depth:
            raise ValueError(f"nesting deeper than {max_depth}")
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(k, bool) or not isinstance(k, int | str):
                    raise ValueError(f"map key {k!r} is not an integer or text")
                _check_encodable(k, depth + 1, max_depth)
                _check_encodable(v, depth + 1, max_depth)
        else:
            for v in value:
                _check_encodable(v, depth + 1, max_depth)
        return
    raise ValueError(f"type {type(value).__name__} is not in the CBOR profile")


def loads(data: bytes | bytearray | memoryview, *, max_depth: int = MAX_DEPTH) -> Any:
    """Decode exactly one CBOR item from `data`, strictly; raise ProtocolError otherwise."""
    dec = _Decoder(bytes(data), max_depth)
    value = dec.item(0, is_key=False)
    if dec.pos != len(dec.data):
        raise ProtocolError(ErrorCode.TRAILING_BYTES, f"{len(dec.data) - dec.pos} bytes after the item")
    return value


class _Decoder:
    """Recursive descent; recursion is bounded by max_depth, checked before descending."""

    def __init__(self, data: bytes, max_depth: int) -> None:
        self.data = data
        self.pos = 0
        self.max_depth = max_depth

    def _take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise ProtocolError(ErrorCode.MALFORMED_CBOR, f"truncated at offset {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def _head(self) -> tuple[int, int, int]:
        """Read an initial byte and its argument: (major type, additional info, argument)."""
        start = self.pos
        ib = self._take(1)[0]
        major, ai = ib >> 5, ib & 0x1F
        if 28 <= ai <= 30:
            raise ProtocolError(ErrorCode.MALFORMED_CBOR, f"reserved additional info {ai} at offset {start}")
        if ai == 31:
            if major in (2, 3, 4, 5):
                raise ProtocolError(ErrorCode.INDEFINITE_LENGTH, f"indefinite length at offset {start}")
            raise ProtocolError(ErrorCode.MALFORMED_CBOR, f"invalid initial byte 0x{ib:02x} at {start}")
        arg = ai if ai < 24 else int.from_bytes(self._take(1 << (ai - 24)), "big")
        return major, ai, arg

    def item(self, depth: int, *, is_key: bool) -> Any:
        start = self.pos
        major, ai, arg = self._head()
        if is_key and major not in (0, 1, 3):
            raise ProtocolError(ErrorCode.UNSUPPORTED_ITEM, f"map key of major type {major} at {start}")
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major in (2, 3):
            raw = self._take(arg)
            if major == 2:
                return raw
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(ErrorCode.MALFORMED_CBOR, f"invalid UTF-8 at offset {start}") from None
        if major in (4, 5):
            if depth + 1 > self.max_depth:
                raise ProtocolError(ErrorCode.TOO_DEEP, f"nesting deeper than {self.max_depth}")
            remaining = len(self.data) - self.pos
            if (arg if major == 4 else 2 * arg) > remaining:
                raise ProtocolError(ErrorCode.MALFORMED_CBOR, f"count {arg} exceeds data at offset {start}")
            if major == 4:
                return [self.item(depth + 1, is_key=False) for _ in range(arg)]
            out: dict[Any, Any] = {}
            for _ in range(arg):
                key = self.item(depth + 1, is_key=True)
                out[key] = self.item(depth + 1, is_key=False)
            return out
        if major == 6:
            raise ProtocolError(ErrorCode.UNSUPPORTED_ITEM, f"tag {arg} at offset {start}")
        # major 7
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai == 22:
            return None
        if ai == 24 and arg < 32:
            raise ProtocolError(ErrorCode.MALFORMED_CBOR, f"two-byte simple value {arg} at offset {start}")
        kind = "float" if ai >= 25 else "simple value"
        raise ProtocolError(ErrorCode.UNSUPPORTED_ITEM, f"{kind} at offset {start}")
