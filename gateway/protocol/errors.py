"""Protocol error codes and the exception that carries them.

Every decoding failure maps to exactly one numeric code so that the gateway and the firmware
report the same code for the same bad input (both sides are tested against one corpus).
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Codes carried by the `error` message (docs/protocol.md, "Error codes")."""

    # Framing / CBOR layer
    FRAME_TOO_LARGE = 1
    MALFORMED_CBOR = 2
    INDEFINITE_LENGTH = 3
    TRAILING_BYTES = 4
    TOO_DEEP = 5
    UNSUPPORTED_ITEM = 6
    # Envelope / message layer
    BAD_ENVELOPE = 16
    UNSUPPORTED_VERSION = 17
    UNKNOWN_MESSAGE = 18
    BAD_FIELDS = 19
    UNEXPECTED_MESSAGE = 20
    # Peer condition
    INTERNAL = 32
    UNKNOWN_DEVICE = 33


class ProtocolError(Exception):
    """A violation of the wire protocol: answered with an `error` message, then the session closes.

    `message_id` is the id of the offending envelope when it could be read, else None (the error
    reply then uses id 0).
    """

    def __init__(self, code: int, text: str, message_id: int | None = None) -> None:
        super().__init__(f"{_code_name(code)}: {text}")
        self.code = int(code)
        self.text = text
        self.message_id = message_id


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"error {code}"
