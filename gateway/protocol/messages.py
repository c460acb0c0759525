"""Envelope and message types of protocol version 1 (docs/protocol.md is normative).

Each message is a CBOR array `[tag, field1, field2, ...]` with positional fields; the envelope is
`[version, message_id, message]`. Dataclasses validate on construction, so an invalid message can
neither be built locally nor accepted from the wire (BAD_FIELDS).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, Self

from . import cbor
from .errors import ErrorCode, ProtocolError

PROTOCOL_VERSION = 1
"""Envelope version written and accepted by this implementation."""

INITIAL_MAX_FRAME_SIZE = 1024
"""Largest frame body either side accepts before hello_ack has set the agreed size."""
MIN_FRAME_SIZE = 1024
"""Smallest max_frame_size a device may announce or a gateway may agree to."""

U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF

BOARD_MAX = 32
FIRMWARE_VERSION_MAX = 32
FEATURES_MAX = 16
FEATURE_MAX = 32
CSR_MAX = 600
TOKEN_MAX = 32
CERT_MAX = 1024
REASON_MAX = 128
DEVICE_NAME_MAX = 63
UUID_LEN = 16
APPS_MAX = 16
ERROR_TEXT_MAX = 128
HEARTBEAT_MIN_MS = 1_000
HEARTBEAT_MAX_MS = 3_600_000


class Tag(IntEnum):
    """Message tags (first element of the message array)."""

    HELLO = 1
    HELLO_ACK = 2
    ENROLL_REQUEST = 3
    ENROLL_RESULT = 4
    HEARTBEAT = 5
    HEARTBEAT_ACK = 6
    ERROR = 7
    # 8..15 reserved (session messages), 16..47 reserved (app messages); later versions.


class EnrollStatus(IntEnum):
    ACCEPTED = 0
    PENDING = 1
    REJECTED = 2


class AppStateCode(IntEnum):
    """Known app state codes; receivers accept any 0..255 and treat unknown ones as UNKNOWN."""

    UNKNOWN = 0
    DEPLOYING = 1
    STOPPED = 2
    RUNNING = 3
    FAILED = 4


# -- field checks -------------------------------------------------------------------------------


def _bad(text: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FIELDS, text)


def _uint(value: Any, name: str, lo: int = 0, hi: int = U32_MAX) -> int:
    # bool is an int subclass in Python; CBOR true is not an integer.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{name}: expected unsigned integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise _bad(f"{name}: {value} outside {lo}..{hi}")
    return value


def _text(value: Any, name: str, lo: int, hi: int) -> str:
    if not isinstance(value, str):
        raise _bad(f"{name}: expected text, got {type(value).__name__}")
    n = len(value.encode("utf-8", errors="surrogatepass"))
    if not lo <= n <= hi:
        raise _bad(f"{name}: {n} bytes outside {lo}..{hi}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(f"{name}: not encodable as UTF-8") from None
    return value


def _bytes(value: Any, name: str, lo: int, hi: int) -> bytes:
    if not isinstance(value, bytes):
        raise _bad(f"{name}: expected byte string, got {type(value).__name__}")
    if not lo <= len(value) <= hi:
        raise _bad(f"{name}: {len(value)} bytes outside {lo}..{hi}")
    return value


def _array(value: Any, name: str, lo: int, hi: int) -> list[Any] | tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        raise _bad(f"{name}: expected array, got {type(value).__name__}")
    if not lo <= len(value) <= hi:
        raise _bad(f"{name}: {len(value)} entries outside {lo}..{hi}")
    return value


# -- messages -----------------------------------------------------------------------------------


class Message:
    """Base of all messages: `to_item()` gives the CBOR array, `from_item()` validates one."""

    TAG: ClassVar[int]
    NFIELDS: ClassVar[int]

    def fields(self) -> list[Any]:
        raise NotImplementedError

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Self:
        raise NotImplementedError

    def to_item(self) -> list[Any]:
        return [self.TAG, *self.fields()]

    def to_cbor(self) -> bytes:
        """The message array alone (no envelope), encoded with cbor2."""
        return cbor.dumps(self.to_item())

    @classmethod
    def from_item(cls, item: Any) -> Self:
        msg = parse_message(item)
        if cls is not Message and not isinstance(msg, cls):
            text = f"expected {cls.__name__}, got {type(msg).__name__}"
            raise ProtocolError(ErrorCode.UNEXPECTED_MESSAGE, text)
        return msg  # type: ignore[return-value]

    @classmethod
    def from_cbor(cls, data: bytes) -> Self:
        """Strictly decode a message array (no envelope)."""
        return cls.from_item(cbor.loads(data))


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """Device → gateway, first frame of a session: who the device is and what it can take."""

    TAG: ClassVar[int] = Tag.HELLO
    NFIELDS: ClassVar[int] = 7
    protocol_version: int
    board: str
    firmware_version: str
    ram_free: int
    max_app_size: int
    features: tuple[str, ...]
    max_frame_size: int

    def __post_init__(self) -> None:
        _uint(self.protocol_version, "protocol_version", 1)
        _text(self.board, "board", 1, BOARD_MAX)
        _text(self.firmware_version, "firmware_version", 1, FIRMWARE_VERSION_MAX)
        _uint(self.ram_free, "ram_free")
        _uint(self.max_app_size, "max_app_size")
        feats = _array(self.features, "features", 0, FEATURES_MAX)
        for i, f in enumerate(feats):
            _text(f, f"features[{i}]", 1, FEATURE_MAX)
        object.__setattr__(self, "features", tuple(feats))
        _uint(self.max_frame_size, "max_frame_size", MIN_FRAME_SIZE)

    def fields(self) -> list[Any]:
        return [
            self.protocol_version,
            self.board,
            self.firmware_version,
            self.ram_free,
            self.max_app_size,
            list(self.features),
            self.max_frame_size,
        ]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls(f[0], f[1], f[2], f[3], f[4], _array(f[5], "features", 0, FEATURES_MAX), f[6])


@dataclass(frozen=True, slots=True)
class HelloAck(Message):
    """Gateway → device: the agreed version and frame size, the clock, the heartbeat period."""

    TAG: ClassVar[int] = Tag.HELLO_ACK
    NFIELDS: ClassVar[int] = 4
    protocol_version: int
    max_frame_size: int
    gateway_time_ms: int
    heartbeat_interval_ms: int

    def __post_init__(self) -> None:
        _uint(self.protocol_version, "protocol_version", 1)
        _uint(self.max_frame_size, "max_frame_size", MIN_FRAME_SIZE)
        _uint(self.gateway_time_ms, "gateway_time_ms", 0, U64_MAX)
        _uint(self.heartbeat_interval_ms, "heartbeat_interval_ms", HEARTBEAT_MIN_MS, HEARTBEAT_MAX_MS)

    def fields(self) -> list[Any]:
        return [self.protocol_version, self.max_frame_size, self.gateway_time_ms, self.heartbeat_interval_ms]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls(*f)


@dataclass(frozen=True, slots=True)
class EnrollRequest(Message):
    """Device → gateway on a session without client certificate: a PKCS#10 CSR asking for one.

    The CSR's self-signature proves the device holds the key; the gateway derives the SPKI and its
    fingerprint from it. `token` is a one-time enrollment token (empty when the device has none).
    """

    TAG: ClassVar[int] = Tag.ENROLL_REQUEST
    NFIELDS: ClassVar[int] = 3
    csr: bytes
    board: str
    token: bytes = b""

    def __post_init__(self) -> None:
        _bytes(self.csr, "csr", 1, CSR_MAX)
        _text(self.board, "board", 1, BOARD_MAX)
        _bytes(self.token, "token", 0, TOKEN_MAX)

    def fields(self) -> list[Any]:
        return [self.csr, self.board, self.token]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls(*f)


@dataclass(frozen=True, slots=True)
class EnrollResult(Message):
    """Gateway → device: the decision; name, UUID and certificate only when accepted (else empty).

    `reason` is human-readable (logs only), allowed with any status.
    """

    TAG: ClassVar[int] = Tag.ENROLL_RESULT
    NFIELDS: ClassVar[int] = 5
    status: int
    device_name: str = ""
    device_uuid: bytes = b""
    certificate: bytes = b""
    reason: str = ""

    def __post_init__(self) -> None:
        _uint(self.status, "status", 0, max(EnrollStatus))
        if self.status == EnrollStatus.ACCEPTED:
            _text(self.device_name, "device_name", 1, DEVICE_NAME_MAX)
            _bytes(self.device_uuid, "device_uuid", UUID_LEN, UUID_LEN)
            _bytes(self.certificate, "certificate", 1, CERT_MAX)
        else:
            _text(self.device_name, "device_name", 0, 0)
            _bytes(self.device_uuid, "device_uuid", 0, 0)
            _bytes(self.certificate, "certificate", 0, 0)
        _text(self.reason, "reason", 0, REASON_MAX)

    def fields(self) -> list[Any]:
        return [self.status, self.device_name, self.device_uuid, self.certificate, self.reason]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls(*f)


@dataclass(frozen=True, slots=True)
class AppState:
    """One `[app_id, state, ...]` entry of a heartbeat; extra trailing items are ignored on receipt."""

    app_id: int
    state: int

    def __post_init__(self) -> None:
        _uint(self.app_id, "app_id")
        _uint(self.state, "state", 0, 255)

    @classmethod
    def from_item(cls, item: Any, i: int) -> AppState:
        entry = _array(item, f"apps[{i}]", 2, U32_MAX)
        return cls(entry[0], entry[1])


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Device → gateway, every heartbeat interval: liveness plus the state of each app."""

    TAG: ClassVar[int] = Tag.HEARTBEAT
    NFIELDS: ClassVar[int] = 3
    uptime_ms: int
    free_memory: int
    apps: tuple[AppState, ...] = field(default=())

    def __post_init__(self) -> None:
        _uint(self.uptime_ms, "uptime_ms", 0, U64_MAX)
        _uint(self.free_memory, "free_memory")
        apps = _array(self.apps, "apps", 0, APPS_MAX)
        for i, a in enumerate(apps):
            if not isinstance(a, AppState):
                raise _bad(f"apps[{i}]: expected AppState")
        object.__setattr__(self, "apps", tuple(apps))

    def fields(self) -> list[Any]:
        return [self.uptime_ms, self.free_memory, [[a.app_id, a.state] for a in self.apps]]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        apps = _array(f[2], "apps", 0, APPS_MAX)
        return cls(f[0], f[1], tuple(AppState.from_item(a, i) for i, a in enumerate(apps)))


@dataclass(frozen=True, slots=True)
class HeartbeatAck(Message):
    """Gateway → device: acknowledges a heartbeat and carries the gateway clock."""

    TAG: ClassVar[int] = Tag.HEARTBEAT_ACK
    NFIELDS: ClassVar[int] = 1
    gateway_time_ms: int

    def __post_init__(self) -> None:
        _uint(self.gateway_time_ms, "gateway_time_ms", 0, U64_MAX)

    def fields(self) -> list[Any]:
        return [self.gateway_time_ms]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls(*f)


@dataclass(frozen=True, slots=True)
class ErrorMessage(Message):
    """Either direction: a protocol error; the sender closes the session after sending it."""

    TAG: ClassVar[int] = Tag.ERROR
    NFIELDS: ClassVar[int] = 2
    code: int
    text: str = ""

    def __post_init__(self) -> None:
        _uint(self.code, "code", 1, 0xFFFF)
        _text(self.text, "text", 0, ERROR_TEXT_MAX)

    def fields(self) -> list[Any]:
        return [self.code, self.text]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls(*f)

    @classmethod
    def from_exception(cls, exc: ProtocolError) -> ErrorMessage:
        """Build the reply for `exc`, truncating the text to the limit on a character boundary."""
        raw = exc.text.encode("utf-8", errors="replace")[:ERROR_TEXT_MAX]
        return cls(exc.code, raw.decode("utf-8", errors="ignore"))


def agree_frame_size(device_max: int, gateway_max: int) -> int:
    """The max_frame_size a hello_ack carries: min(device, gateway), never below MIN_FRAME_SIZE."""
    if gateway_max < MIN_FRAME_SIZE:
        raise ValueError(f"gateway max frame size {gateway_max} < {MIN_FRAME_SIZE}")
    return max(MIN_FRAME_SIZE, min(device_max, gateway_max))


MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.TAG: cls for cls in (Hello, HelloAck, EnrollRequest, EnrollResult, Heartbeat, HeartbeatAck, ErrorMessage)
}

RESERVED_TAGS = range(8, 48)
"""Tags reserved for later versions (8..15 session, 16..47 apps); rejected as UNKNOWN_MESSAGE today."""


def parse_message(item: Any) -> Message:
    """Validate a decoded `[tag, fields...]` array into a Message."""
    if not isinstance(item, list) or not item:
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, "message is not a non-empty array")
    tag = item[0]
    if isinstance(tag, bool) or not isinstance(tag, int) or tag < 0:
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, "message tag is not an unsigned integer")
    cls = MESSAGE_TYPES.get(tag)
    if cls is None:
        raise ProtocolError(ErrorCode.UNKNOWN_MESSAGE, f"unknown message tag {tag}")
    fields = item[1:]
    if len(fields) != cls.NFIELDS:
        raise _bad(f"{cls.__name__}: {len(fields)} fields, expected {cls.NFIELDS}")
    return cls.from_fields(fields)


@dataclass(frozen=True, slots=True)
class Envelope:
    """`[version, message_id, message]`; a reply carries the message_id of its request."""

    message_id: int
    message: Message
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        _uint(self.message_id, "message_id")
        _uint(self.version, "version")

    def to_item(self) -> list[Any]:
        return [self.version, self.message_id, self.message.to_item()]

    def to_cbor(self) -> bytes:
        """The frame body: the envelope encoded as one CBOR item."""
        return cbor.dumps(self.to_item())

    @classmethod
    def from_cbor(cls, body: bytes) -> Envelope:
        """Strictly decode a frame body; errors carry the message_id once it is known."""
        return cls.from_item(cbor.loads(body))

    @classmethod
    def from_item(cls, item: Any) -> Envelope:
        if not isinstance(item, list) or len(item) != 3:
            raise ProtocolError(ErrorCode.BAD_ENVELOPE, "envelope is not an array of 3 items")
        version, message_id, message = item
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ProtocolError(ErrorCode.BAD_ENVELOPE, "version is not an unsigned integer")
        if isinstance(message_id, bool) or not isinstance(message_id, int) or not 0 <= message_id <= U32_MAX:
            raise ProtocolError(ErrorCode.BAD_ENVELOPE, "message_id is not a 32-bit unsigned integer")
        if version != PROTOCOL_VERSION:
            raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"envelope version {version}", message_id)
        try:
            msg = parse_message(message)
        except ProtocolError as exc:
            exc.message_id = message_id
            raise
        return cls(message_id, msg, version)
