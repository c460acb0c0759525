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

# App messages (tags 16..25, docs/protocol.md section 7.8 onwards).
APP_NAME_MAX = 32
SHA256_LEN = 32
APP_CONFIG_MAX = 512
CHUNK_MAX = 1536
APP_TEXT_MAX = 128
LOG_TEXT_MAX = 256
TOPIC_MAX = 64
PAYLOAD_MAX = 1024
MEM_PAGES_MAX = 65_536
TIME_BUDGET_MAX_MS = 60_000
LOG_LEVEL_MAX = 3


class Tag(IntEnum):
    """Message tags (first element of the message array)."""

    HELLO = 1
    HELLO_ACK = 2
    ENROLL_REQUEST = 3
    ENROLL_RESULT = 4
    HEARTBEAT = 5
    HEARTBEAT_ACK = 6
    ERROR = 7
    # 8..15 reserved (session messages).
    DEPLOY_BEGIN = 16
    DEPLOY_CHUNK = 17
    DEPLOY_COMMIT = 18
    DEPLOY_RESULT = 19
    APP_START = 20
    APP_STOP = 21
    APP_STATUS = 22
    APP_LOG = 23
    PUBLISH = 24
    MESSAGE = 25
    # 26..47 reserved (app messages); later versions.


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


class AppError(IntEnum):
    """Result codes of deploy_result (not protocol errors: the session goes on)."""

    OK = 0
    TOO_LARGE = 1
    NO_MEMORY = 2
    BAD_OFFSET = 3
    HASH_MISMATCH = 4
    LOAD_FAILED = 5
    START_FAILED = 6
    UNKNOWN_APP = 7
    BUSY = 8


class RestartPolicy(IntEnum):
    """deploy_begin.restart: recorded by the device; the gateway enforces it with app_start."""

    NEVER = 0
    ON_FAILURE = 1
    ALWAYS = 2


class LogLevel(IntEnum):
    DEBUG = 0
    INFO = 1
    WARNING = 2
    ERROR = 3


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


def _app_id(value: Any) -> int:
    return _uint(value, "app_id", 1)


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(f"{name}: expected boolean, got {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class DeployBegin(Message):
    """Gateway → device: a module transfer starts (or restarts from 0 after a link drop)."""

    TAG: ClassVar[int] = Tag.DEPLOY_BEGIN
    NFIELDS: ClassVar[int] = 8
    app_id: int
    name: str
    size: int
    sha256: bytes
    config: bytes = b""
    mem_pages: int = 1
    time_budget_ms: int = 1000
    restart: int = RestartPolicy.NEVER

    def __post_init__(self) -> None:
        _app_id(self.app_id)
        _text(self.name, "name", 1, APP_NAME_MAX)
        _uint(self.size, "size", 1)
        _bytes(self.sha256, "sha256", SHA256_LEN, SHA256_LEN)
        _bytes(self.config, "config", 0, APP_CONFIG_MAX)
        _uint(self.mem_pages, "mem_pages", 0, MEM_PAGES_MAX)
        _uint(self.time_budget_ms, "time_budget_ms", 1, TIME_BUDGET_MAX_MS)
        _uint(self.restart, "restart", 0, max(RestartPolicy))

    def fields(self) -> list[Any]:
        return [self.app_id, self.name, self.size, self.sha256, self.config, self.mem_pages, self.time_budget_ms,
                self.restart]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls(*f)


@dataclass(frozen=True, slots=True)
class DeployChunk(Message):
    """Gateway → device: module bytes [offset, offset + len(data))."""

    TAG: ClassVar[int] = Tag.DEPLOY_CHUNK
    NFIELDS: ClassVar[int] = 3
    app_id: int
    offset: int
    data: bytes

    def __post_init__(self) -> None:
        _app_id(self.app_id)
        _uint(self.offset, "offset")
        _bytes(self.data, "data", 1, CHUNK_MAX)

    def fields(self) -> list[Any]:
        return [self.app_id, self.offset, self.data]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls(*f)


@dataclass(frozen=True, slots=True)
class DeployCommit(Message):
    """Gateway → device: all bytes sent; verify the hash, load and start the app."""

    TAG: ClassVar[int] = Tag.DEPLOY_COMMIT
    NFIELDS: ClassVar[int] = 1
    app_id: int

    def __post_init__(self) -> None:
        _app_id(self.app_id)

    def fields(self) -> list[Any]:
        return [self.app_id]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls(*f)


@dataclass(frozen=True, slots=True)
class DeployResult(Message):
    """Device → gateway, reply to each deploy_begin/chunk/commit: code and contiguous bytes held."""

    TAG: ClassVar[int] = Tag.DEPLOY_RESULT
    NFIELDS: ClassVar[int] = 4
    app_id: int
    code: int
    next_offset: int
    text: str = ""

    def __post_init__(self) -> None:
        _app_id(self.app_id)
        _uint(self.code, "code")
        _uint(self.next_offset, "next_offset")
        _text(self.text, "text", 0, APP_TEXT_MAX)

    def fields(self) -> list[Any]:
        return [self.app_id, self.code, self.next_offset, self.text]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls(*f)


@dataclass(frozen=True, slots=True)
class AppStart(Message):
    """Gateway → device: start a stopped or failed app (reply: app_status)."""

    TAG: ClassVar[int] = Tag.APP_START
    NFIELDS: ClassVar[int] = 1
    app_id: int

    def __post_init__(self) -> None:
        _app_id(self.app_id)

    def fields(self) -> list[Any]:
        return [self.app_id]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls(*f)


@dataclass(frozen=True, slots=True)
class AppStop(Message):
    """Gateway → device: stop an app; ``remove`` also frees its module (reply: app_status)."""

    TAG: ClassVar[int] = Tag.APP_STOP
    NFIELDS: ClassVar[int] = 2
    app_id: int
    remove: bool = False

    def __post_init__(self) -> None:
        _app_id(self.app_id)
        _bool(self.remove, "remove")

    def fields(self) -> list[Any]:
        return [self.app_id, self.remove]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls(*f)


@dataclass(frozen=True, slots=True)
class AppMetrics:
    """``[calls, traps, mem_pages, max_call_ms]`` of an app_status."""

    calls: int = 0
    traps: int = 0
    mem_pages: int = 0
    max_call_ms: int = 0

    def __post_init__(self) -> None:
        for name in ("calls", "traps", "mem_pages", "max_call_ms"):
            _uint(getattr(self, name), f"metrics.{name}")

    def to_item(self) -> list[int]:
        return [self.calls, self.traps, self.mem_pages, self.max_call_ms]

    @classmethod
    def from_item(cls, item: Any) -> AppMetrics:
        return cls(*_array(item, "metrics", 4, 4))


@dataclass(frozen=True, slots=True)
class AppStatus(Message):
    """Device → gateway: an app's state; a reply to app_start/app_stop, and unsolicited on every change."""

    TAG: ClassVar[int] = Tag.APP_STATUS
    NFIELDS: ClassVar[int] = 5
    app_id: int
    state: int
    error: str = ""
    restarts: int = 0
    metrics: AppMetrics = field(default_factory=AppMetrics)

    def __post_init__(self) -> None:
        _app_id(self.app_id)
        _uint(self.state, "state", 0, 255)
        _text(self.error, "error", 0, APP_TEXT_MAX)
        _uint(self.restarts, "restarts")
        if not isinstance(self.metrics, AppMetrics):
            raise _bad("metrics: expected AppMetrics")

    def fields(self) -> list[Any]:
        return [self.app_id, self.state, self.error, self.restarts, self.metrics.to_item()]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls(f[0], f[1], f[2], f[3], AppMetrics.from_item(f[4]))


@dataclass(frozen=True, slots=True)
class AppLog(Message):
    """Device → gateway: one log line of an app (its ``log`` host call)."""

    TAG: ClassVar[int] = Tag.APP_LOG
    NFIELDS: ClassVar[int] = 4
    app_id: int
    level: int
    uptime_ms: int
    text: str

    def __post_init__(self) -> None:
        _app_id(self.app_id)
        _uint(self.level, "level", 0, LOG_LEVEL_MAX)
        _uint(self.uptime_ms, "uptime_ms", 0, U64_MAX)
        _text(self.text, "text", 0, LOG_TEXT_MAX)

    def fields(self) -> list[Any]:
        return [self.app_id, self.level, self.uptime_ms, self.text]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls(*f)


@dataclass(frozen=True, slots=True)
class _TopicMessage(Message):
    """Shape shared by publish and message: an app id, a topic and a payload."""

    NFIELDS: ClassVar[int] = 3
    app_id: int
    topic: str
    payload: bytes = b""

    def __post_init__(self) -> None:
        _app_id(self.app_id)
        _text(self.topic, "topic", 1, TOPIC_MAX)
        _bytes(self.payload, "payload", 0, PAYLOAD_MAX)

    def fields(self) -> list[Any]:
        return [self.app_id, self.topic, self.payload]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls(*f)


@dataclass(frozen=True, slots=True)
class Publish(_TopicMessage):
    """Device → gateway: an app published ``payload`` on ``topic``."""

    TAG: ClassVar[int] = Tag.PUBLISH


@dataclass(frozen=True, slots=True)
class AppMessage(_TopicMessage):
    """Gateway → device: deliver ``payload`` on ``topic`` to an app's on_message (tag ``message``)."""

    TAG: ClassVar[int] = Tag.MESSAGE


def agree_frame_size(device_max: int, gateway_max: int) -> int:
    """The max_frame_size a hello_ack carries: min(device, gateway), never below MIN_FRAME_SIZE."""
    if gateway_max < MIN_FRAME_SIZE:
        raise ValueError(f"gateway max frame size {gateway_max} < {MIN_FRAME_SIZE}")
    return max(MIN_FRAME_SIZE, min(device_max, gateway_max))


MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.TAG: cls
    for cls in (Hello, HelloAck, EnrollRequest, EnrollResult, Heartbeat, HeartbeatAck, ErrorMessage, DeployBegin,
                DeployChunk, DeployCommit, DeployResult, AppStart, AppStop, AppStatus, AppLog, Publish, AppMessage)
}

RESERVED_TAGS = (*range(8, 16), *range(26, 48))
"""Tags reserved for later versions (8..15 session, 26..47 apps); rejected as UNKNOWN_MESSAGE today."""

GATEWAY_TO_DEVICE = frozenset({Tag.HELLO_ACK, Tag.ENROLL_RESULT, Tag.HEARTBEAT_ACK, Tag.ERROR, Tag.DEPLOY_BEGIN,
                               Tag.DEPLOY_CHUNK, Tag.DEPLOY_COMMIT, Tag.APP_START, Tag.APP_STOP, Tag.MESSAGE})
DEVICE_TO_GATEWAY = frozenset({Tag.HELLO, Tag.ENROLL_REQUEST, Tag.HEARTBEAT, Tag.ERROR, Tag.DEPLOY_RESULT,
                               Tag.APP_STATUS, Tag.APP_LOG, Tag.PUBLISH})


def chunk_capacity(max_frame_size: int) -> int:
    """Largest deploy_chunk data that fits a frame body of ``max_frame_size`` (worst-case 32-bit fields)."""
    # [1, id, [17, app_id, offset, bytes]]: 1 + 1 + 5 + 1 + 1 + 5 + 5 + 3 (bytes header for > 255) = 22 bytes.
    return max(0, min(CHUNK_MAX, max_frame_size - 22))


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
