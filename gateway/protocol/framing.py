"""Length-prefixed framing: 4-byte big-endian body length, then exactly one CBOR item.

The reader checks each declared length against the negotiated maximum as soon as the 4 header
bytes are in, so a hostile peer cannot make us buffer an oversized body.
"""

from __future__ import annotations

from collections.abc import Iterator

from .errors import ErrorCode, ProtocolError
from .messages import INITIAL_MAX_FRAME_SIZE, U32_MAX, Envelope

HEADER_SIZE = 4


def encode_frame(envelope: Envelope, max_frame_size: int | None = None) -> bytes:
    """Header + body for `envelope`; refuse to produce a body the peer would reject."""
    body = envelope.to_cbor()
    limit = U32_MAX if max_frame_size is None else max_frame_size
    if len(body) > limit:
        text = f"frame body {len(body)} > {limit}"
        raise ProtocolError(ErrorCode.FRAME_TOO_LARGE, text, envelope.message_id)
    return len(body).to_bytes(HEADER_SIZE, "big") + body


def decode_frame(frame: bytes, max_frame_size: int = INITIAL_MAX_FRAME_SIZE) -> Envelope:
    """Decode one complete frame (header included); mainly for tests and tools."""
    if len(frame) < HEADER_SIZE:
        raise ProtocolError(ErrorCode.MALFORMED_CBOR, "frame shorter than its header")
    length = int.from_bytes(frame[:HEADER_SIZE], "big")
    if length > max_frame_size:
        raise ProtocolError(ErrorCode.FRAME_TOO_LARGE, f"declared frame length {length} > {max_frame_size}")
    if len(frame) - HEADER_SIZE != length:
        raise ProtocolError(ErrorCode.MALFORMED_CBOR, "frame length does not match its header")
    return Envelope.from_cbor(frame[HEADER_SIZE:])


class FrameReader:
    """Incremental frame splitter for a byte stream (TLS records or UART chunks arrive arbitrarily).

    `feed()` returns an iterator over the complete frame bodies now available; iterate it fully.
    After a FRAME_TOO_LARGE error the reader stays failed: the session must close.
    """

    def __init__(self, max_frame_size: int = INITIAL_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._need: int | None = None  # body length of the frame being read, once its header is in
        self._failed: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._failed is not None:
            raise self._failed
        self._buf += data
        return self._drain()

    def _drain(self) -> Iterator[bytes]:
        while True:
            if self._failed is not None:
                raise self._failed
            if self._need is None:
                if len(self._buf) < HEADER_SIZE:
                    return
                length = int.from_bytes(self._buf[:HEADER_SIZE], "big")
                if length > self.max_frame_size:
                    self._buf.clear()
                    self._failed = ProtocolError(
                        ErrorCode.FRAME_TOO_LARGE, f"declared frame length {length} > {self.max_frame_size}"
                    )
                    raise self._failed
                del self._buf[:HEADER_SIZE]
                self._need = length
            if len(self._buf) < self._need:
                return
            body = bytes(self._buf[: self._need])
            del self._buf[: self._need]
            self._need = None
            yield body
