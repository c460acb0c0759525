"""Resource model: Kubernetes-CRD-shaped dataclasses for devices and gateways.

Why CRD-shaped: the original project stored these as Kubernetes custom resources. We keep the
*shape* (``apiVersion``/``kind``/``metadata``/``spec``/``status``, camelCase keys) so exported objects
read like ``kubectl get -o yaml`` output and a future CRD backend stays possible, but we do not
depend on Kubernetes.

Conventions (one of each, everywhere -- the original mixed them):

* one API group and version for every kind: ``wasmbed.github.io/v1alpha1`` (:data:`API_VERSION`);
* ``bytes`` fields serialise as **standard base64 with padding** (RFC 4648 section 4), never base64url;
* key fingerprints are lowercase colon-separated SHA-256 hex (see :func:`wasmbed.gateway.pki.fingerprint`);
* timestamps are UTC RFC 3339 with a ``Z`` suffix; ``resourceVersion`` is an opaque decimal string in
  the serialised form (as in Kubernetes) and an ``int`` in Python;
* ``None`` fields are omitted when serialising; unknown keys are *rejected* when parsing, so a typo in
  hand-written input fails loudly instead of being dropped.

Device phase machine (:data:`DEVICE_TRANSITIONS`) is exactly the upstream table::

    Pending      -> Enrolling
    Enrolling    -> Enrolled | Pending
    Enrolled     -> Connected
    Connected    -> Disconnected | Unreachable
    Disconnected -> Connected | Unreachable
    Unreachable  -> Connected | Disconnected

Decisions kept on purpose:

* A *rejected* enrollment goes Enrolling -> Pending with ``status.reason`` set; the record is kept so an
  operator can see the attempt and approve it later. Deleting a device is an explicit operator action
  (and, since every session is checked against the store, deletion is also how a device is revoked).
* There is no Enrolled -> Disconnected: "Enrolled" means "certificate issued, never seen using it". The
  device must reconnect with its new certificate (-> Connected); if it never does it stays Enrolled,
  which is the truthful state.
* Self-transitions (e.g. Connected -> Connected) are invalid; a heartbeat updates ``last_heartbeat`` but
  does not "transition".

An invalid transition raises :class:`InvalidTransition`. It always indicates a gateway bug or a
protocol violation, so callers must log it (with the device name) rather than swallow it.

New kinds (``Application`` later) slot in by defining ``Spec``/``Status`` dataclasses and a
:class:`Resource` subclass decorated with :func:`register_kind`; the generic codec below handles
nested dataclasses, enums, lists, dicts, bytes, datetimes and optionals.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import functools
import hashlib
import re
import types
import typing
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

API_GROUP = "wasmbed.github.io"
API_VERSION_NAME = "v1alpha1"
API_VERSION = f"{API_GROUP}/{API_VERSION_NAME}"

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_KEY_RE = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                           r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_FINGERPRINT_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){31}$")


class ModelError(ValueError):
    """Input that cannot be turned into a valid resource (bad name, unknown key, wrong type...)."""


class InvalidTransition(Exception):
    """A phase change not in the transition table: a gateway bug or a protocol violation."""

    def __init__(self, kind: str, name: str, old: enum.Enum, new: enum.Enum) -> None:
        super().__init__(f"{kind} {name!r}: invalid phase transition {old.value} -> {new.value}")
        self.kind = kind
        self.name = name
        self.old = old
        self.new = new


def validate_name(name: str) -> str:
    """Check a DNS-1123 subdomain name; names end up in SQL keys, UI, logs and certificate CNs."""
    if not isinstance(name, str) or not (1 <= len(name) <= 253) or not _NAME_RE.match(name):
        raise ModelError(f"invalid name {name!r}: need lowercase DNS-1123 (a-z, 0-9, '-', '.'), <= 253 chars")
    return name


def validate_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Check Kubernetes-style label keys/values so selectors behave predictably."""
    out: dict[str, str] = {}
    for k, v in labels.items():
        if not isinstance(k, str) or len(k) > 317 or not _LABEL_KEY_RE.match(k):
            raise ModelError(f"invalid label key {k!r}")
        if not isinstance(v, str) or len(v) > 63 or not _LABEL_VALUE_RE.match(v):
            raise ModelError(f"invalid label value {v!r} for key {k!r}")
        out[k] = v
    return out


def matches_labels(labels: Mapping[str, str], selector: Mapping[str, str] | None) -> bool:
    """Equality-based selector (Kubernetes ``matchLabels``): every selector pair must be present."""
    if not selector:
        return True
    return all(labels.get(k) == v for k, v in selector.items())


def spki_fingerprint(spki_der: bytes) -> str:
    """SHA-256 of a DER SubjectPublicKeyInfo as lowercase colon-separated hex (the ONE encoding).

    Defined here (hashlib only) so the model has no dependency on ``cryptography``;
    :func:`wasmbed.gateway.pki.fingerprint` is the same function.
    """
    return hashlib.sha256(spki_der).digest().hex(":", 1)


def utcnow() -> datetime:
    """Timezone-aware UTC now; one place so tests and callers agree on the clock type."""
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------------------
# metadata and common pieces


@dataclass
class ObjectMeta:
    """Kubernetes-like metadata. ``resource_version`` 0 means "never stored"."""

    name: str
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    labels: dict[str, str] = field(default_factory=dict)
    created: datetime | None = None
    generation: int = 0
    resource_version: int = 0

    def __post_init__(self) -> None:
        validate_name(self.name)
        self.labels = validate_labels(self.labels)


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


@dataclass
class Condition:
    """Kubernetes-style condition (``type``, ``status``, ``reason``, ``message``, transition time)."""

    type: str
    status: ConditionStatus = ConditionStatus.UNKNOWN
    reason: str | None = None
    message: str | None = None
    last_transition_time: datetime | None = None


# --------------------------------------------------------------------------------------------------
# Device


class DevicePhase(enum.StrEnum):
    PENDING = "Pending"
    ENROLLING = "Enrolling"
    ENROLLED = "Enrolled"
    CONNECTED = "Connected"
    DISCONNECTED = "Disconnected"
    UNREACHABLE = "Unreachable"


P = DevicePhase
DEVICE_TRANSITIONS: Mapping[DevicePhase, frozenset[DevicePhase]] = types.MappingProxyType({
    P.PENDING: frozenset({P.ENROLLING}),
    P.ENROLLING: frozenset({P.ENROLLED, P.PENDING}),
    P.ENROLLED: frozenset({P.CONNECTED}),
    P.CONNECTED: frozenset({P.DISCONNECTED, P.UNREACHABLE}),
    P.DISCONNECTED: frozenset({P.CONNECTED, P.UNREACHABLE}),
    P.UNREACHABLE: frozenset({P.CONNECTED, P.DISCONNECTED}),
})
del P


def can_transition(old: DevicePhase, new: DevicePhase) -> bool:
    """True if ``old -> new`` is in :data:`DEVICE_TRANSITIONS`."""
    return new in DEVICE_TRANSITIONS[old]


@dataclass
class DeviceSpec:
    """Desired/identity data. The device's identity is the SPKI of its TLS client key."""

    public_key_fingerprint: str
    public_key: bytes | None = None  # SPKI DER; serialised as standard base64
    board: str | None = None  # e.g. "mps2-an385"
    preferred_gateway: str | None = None

    def __post_init__(self) -> None:
        if not _FINGERPRINT_RE.match(self.public_key_fingerprint):
            raise ModelError(f"publicKeyFingerprint must be lowercase colon-separated SHA-256 hex: "
                             f"{self.public_key_fingerprint!r}")
        if self.public_key is not None and spki_fingerprint(self.public_key) != self.public_key_fingerprint:
            raise ModelError("publicKeyFingerprint does not match publicKey")


@dataclass
class DeviceStatus:
    """Observed state, written only by the gateway."""

    phase: DevicePhase = DevicePhase.PENDING
    gateway: str | None = None
    connected_since: datetime | None = None
    last_heartbeat: datetime | None = None
    uptime_ms: int | None = None
    free_ram: int | None = None
    firmware_version: str | None = None
    reason: str | None = None
    # Last reported state per app, keyed by the app id as text (JSON object keys are strings):
    # "Unknown" | "Deploying" | "Stopped" | "Running" | "Failed".
    apps: dict[str, str] | None = None


# --------------------------------------------------------------------------------------------------
# Gateway


class GatewayPhase(enum.StrEnum):
    PENDING = "Pending"  # configured, not started
    RUNNING = "Running"
    DEGRADED = "Degraded"  # running, but a condition is False (e.g. at max devices)
    STOPPED = "Stopped"


@dataclass
class GatewaySpec:
    endpoint: str
    port: int
    max_devices: int = 64
    heartbeat_interval_s: int = 5
    unreachable_timeout_s: int = 15
    pairing_mode: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ModelError(f"gateway port out of range: {self.port}")
        if self.max_devices < 0:
            raise ModelError("maxDevices must be >= 0")
        if not 0 < self.heartbeat_interval_s < self.unreachable_timeout_s:
            raise ModelError("need 0 < heartbeatIntervalSeconds < unreachableTimeoutSeconds")


@dataclass
class GatewayStatus:
    phase: GatewayPhase = GatewayPhase.PENDING
    connected_devices: int = 0
    enrolled_devices: int = 0
    conditions: list[Condition] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# resources and kind registry


@dataclass
class Resource:
    """Base of every kind. Subclasses add ``spec`` and ``status`` fields and a ``KIND``."""

    KIND: ClassVar[str] = ""
    metadata: ObjectMeta

    @property
    def name(self) -> str:
        return self.metadata.name

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict shaped like a Kubernetes object."""
        out: dict[str, Any] = {"apiVersion": API_VERSION, "kind": self.KIND}
        out.update(_encode_dataclass(self))
        return out

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """Inverse of :meth:`to_dict`; validates ``apiVersion``/``kind`` and rejects unknown keys."""
        if data.get("apiVersion") != API_VERSION:
            raise ModelError(f"unsupported apiVersion {data.get('apiVersion')!r}; expected {API_VERSION!r}")
        if data.get("kind") != cls.KIND:
            raise ModelError(f"kind {data.get('kind')!r} is not {cls.KIND!r}")
        body = {k: v for k, v in data.items() if k not in ("apiVersion", "kind")}
        obj: R = _decode(cls, body, cls.KIND)
        return obj


R = TypeVar("R", bound=Resource)

KINDS: dict[str, type[Resource]] = {}


def register_kind(cls: type[R]) -> type[R]:
    """Class decorator: make a kind known to :func:`resource_from_dict` and the store."""
    if not cls.KIND or cls.KIND in KINDS:
        raise ValueError(f"bad or duplicate kind {cls.KIND!r}")
    KINDS[cls.KIND] = cls
    return cls


def resource_from_dict(data: Mapping[str, Any]) -> Resource:
    """Parse any registered kind from its dict form."""
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ModelError(f"unknown kind {kind!r}")
    return KINDS[kind].from_dict(data)


@register_kind
@dataclass
class Device(Resource):
    KIND: ClassVar[str] = "Device"
    spec: DeviceSpec
    status: DeviceStatus = field(default_factory=DeviceStatus)

    @property
    def phase(self) -> DevicePhase:
        return self.status.phase

    def set_phase(self, new: DevicePhase, *, reason: str | None = None, now: datetime | None = None) -> None:
        """Move to ``new`` or raise :class:`InvalidTransition` (state unchanged on error).

        Also maintains ``connected_since`` (set on entering Connected, cleared on leaving it for
        Disconnected) and ``reason`` (replaced on every transition).
        """
        old = self.status.phase
        if not can_transition(old, new):
            raise InvalidTransition(self.KIND, self.metadata.name, old, new)
        now = now or utcnow()
        self.status.phase = new
        self.status.reason = reason
        if new is DevicePhase.CONNECTED:
            self.status.connected_since = now
            self.status.last_heartbeat = now
        elif new in (DevicePhase.DISCONNECTED, DevicePhase.PENDING):
            self.status.connected_since = None


@register_kind
@dataclass
class Gateway(Resource):
    KIND: ClassVar[str] = "Gateway"
    spec: GatewaySpec
    status: GatewayStatus = field(default_factory=GatewayStatus)


@dataclass
class EnrollmentTokenSpec:
    """A one-time enrollment token, stored only as its SHA-256 (hex) so the store never holds the secret."""

    token_sha256: str
    expires: datetime
    board: str | None = None  # the token is valid only for a hello/enroll_request naming this board
    issued_by: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # put on the Device that redeems the token

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{64}", self.token_sha256):
            raise ModelError("tokenSha256 must be 64 lowercase hex digits")


@dataclass
class EnrollmentTokenStatus:
    used: datetime | None = None
    used_by: str | None = None  # fingerprint of the key that used it


@register_kind
@dataclass
class EnrollmentToken(Resource):
    """Kept in the store (not in memory) so issued tokens survive a gateway restart; single use."""

    KIND: ClassVar[str] = "EnrollmentToken"
    spec: EnrollmentTokenSpec
    status: EnrollmentTokenStatus = field(default_factory=EnrollmentTokenStatus)


@dataclass
class BoardSpec:
    """An emulated board the lab runs: which DTS board type, and how the supervisor treats it."""

    board_type: str
    autostart: bool = True  # start with the gateway
    auto_enroll: bool = True  # hand the board a one-time enrollment token at each start
    icount_shift: int | None = None  # -icount shift=N (deterministic, instruction-counted time)


@dataclass
class BoardStatus:
    """What the supervisor last saw of the board's QEMU process."""

    state: str = "stopped"  # supervisor.BoardState value
    pid: int | None = None
    started: datetime | None = None
    exit_code: int | None = None
    restarts: int = 0
    message: str | None = None


@register_kind
@dataclass
class Board(Resource):
    """A lab board (a QEMU process). Its enrolled identity is a Device labelled with the board's name."""

    KIND: ClassVar[str] = "Board"
    spec: BoardSpec
    status: BoardStatus = field(default_factory=BoardStatus)


#: Label put on a Device enrolled through a lab board's token: the Board it runs on.
LAB_BOARD_LABEL = "wasmbed.github.io/lab-board"


# --------------------------------------------------------------------------------------------------
# Apps: the module catalog (AppModule) and deployments (Application)

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class AppModuleSpec:
    """A catalog entry: the current module of an app name, content-addressed in the module store."""

    module_sha256: str
    size: int
    version: str
    imports: list[str] = field(default_factory=list)
    exports: list[str] = field(default_factory=list)
    initial_pages: int = 0
    source: str | None = None  # file name it was added from, for humans
    added_by: str | None = None

    def __post_init__(self) -> None:
        if not _SHA256_RE.match(self.module_sha256):
            raise ModelError("moduleSha256 must be 64 lowercase hex digits")


@register_kind
@dataclass
class AppModule(Resource):
    """An app in the catalog (metadata.name = the app's name); the module bytes live in the module store."""

    KIND: ClassVar[str] = "AppModule"
    spec: AppModuleSpec


class AppPhase(enum.StrEnum):
    CREATING = "Creating"  # accepted, no device has been worked on yet
    DEPLOYING = "Deploying"
    RUNNING = "Running"  # running on every target
    PARTIALLY_RUNNING = "PartiallyRunning"  # running on some targets
    FAILED = "Failed"  # failed on every target it reached
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    DELETING = "Deleting"


class AppDevicePhase(enum.StrEnum):
    DEPLOYING = "Deploying"
    RUNNING = "Running"
    FAILED = "Failed"
    STOPPED = "Stopped"


class RestartPolicy(enum.StrEnum):
    NEVER = "never"
    ON_FAILURE = "on-failure"
    ALWAYS = "always"


class DesiredState(enum.StrEnum):
    RUNNING = "Running"
    STOPPED = "Stopped"
    DELETED = "Deleted"  # undeploy: remove from every device, then the resource goes


@dataclass
class AppTargets:
    """Where an app runs: named devices plus every device matching the selector (matchLabels)."""

    devices: list[str] = field(default_factory=list)
    selector: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for d in self.devices:
            validate_name(d)
        self.selector = validate_labels(self.selector)


@dataclass
class AppLimits:
    memory_pages: int | None = None  # max linear memory pages; None: the module's initial pages
    time_budget_ms: int = 1000  # per handler call

    def __post_init__(self) -> None:
        if self.memory_pages is not None and not 0 <= self.memory_pages <= 65_536:
            raise ModelError("limits.memoryPages must be 0..65536")
        if not 1 <= self.time_budget_ms <= 60_000:
            raise ModelError("limits.timeBudgetMs must be 1..60000")


@dataclass
class ApplicationSpec:
    name: str  # the catalog app (AppModule) this deploys
    module_sha256: str
    version: str
    targets: AppTargets = field(default_factory=AppTargets)
    config: dict[str, str] = field(default_factory=dict)
    limits: AppLimits = field(default_factory=AppLimits)
    restart_policy: RestartPolicy = RestartPolicy.NEVER
    desired_state: DesiredState = DesiredState.RUNNING

    def __post_init__(self) -> None:
        if not _SHA256_RE.match(self.module_sha256):
            raise ModelError("moduleSha256 must be 64 lowercase hex digits")
        for k, v in self.config.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ModelError("config must map text to text")


@dataclass
class AppMetricsStatus:
    calls: int = 0
    traps: int = 0
    mem_pages: int = 0
    max_call_ms: int = 0


@dataclass
class AppDeviceStatus:
    """One target device: what runs there (app id, module) and how it is doing."""

    device: str
    phase: AppDevicePhase = AppDevicePhase.DEPLOYING
    app_id: int | None = None
    module_sha256: str | None = None  # the module this app id carries
    error: str | None = None
    restarts: int = 0
    bytes_sent: int = 0
    size: int = 0
    metrics: AppMetricsStatus | None = None
    updated: datetime | None = None


@dataclass
class ApplicationStatus:
    phase: AppPhase = AppPhase.CREATING
    devices: list[AppDeviceStatus] = field(default_factory=list)
    message: str | None = None

    def entry(self, device: str) -> AppDeviceStatus | None:
        return next((e for e in self.devices if e.device == device), None)


@register_kind
@dataclass
class Application(Resource):
    """A deployment of a catalog app to target devices (metadata.name = the app's name)."""

    KIND: ClassVar[str] = "Application"
    spec: ApplicationSpec
    status: ApplicationStatus = field(default_factory=ApplicationStatus)


# --------------------------------------------------------------------------------------------------
# generic dataclass <-> camelCase dict codec

# Field names whose camelCase form should read better than the mechanical conversion.
_KEY_OVERRIDES = {
    "heartbeat_interval_s": "heartbeatIntervalSeconds",
    "unreachable_timeout_s": "unreachableTimeoutSeconds",
    "uptime_ms": "uptimeMs",
    "created": "creationTimestamp",
}


@functools.cache
def camel(name: str) -> str:
    """snake_case -> camelCase, with a few explicit overrides (memoised: the codec calls it per field)."""
    if name in _KEY_OVERRIDES:
        return _KEY_OVERRIDES[name]
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _format_time(t: datetime) -> str:
    if t.tzinfo is None:
        raise ModelError("naive datetime; use timezone-aware UTC")
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{t.microsecond:06d}" if t.microsecond else "") + "Z"


def _parse_time(s: str) -> datetime:
    if not isinstance(s, str) or not s.endswith("Z"):
        raise ModelError(f"timestamp must be RFC 3339 UTC ending in 'Z': {s!r}")
    return datetime.fromisoformat(s[:-1]).replace(tzinfo=UTC)


def _encode_value(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _encode_dataclass(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return _format_time(value)
    if isinstance(value, list):
        return [_encode_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode_value(v) for k, v in value.items()}
    return value


@functools.cache
def _field_keys(cls: type) -> tuple[tuple[str, str], ...]:
    """(attribute, camelCase key) of every field of a dataclass type; cached (the store encodes a lot)."""
    return tuple((f.name, camel(f.name)) for f in dataclasses.fields(cls))


def _encode_dataclass(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, key in _field_keys(type(obj)):
        value = getattr(obj, name)
        if value is None:
            continue
        if name == "resource_version":
            out[key] = str(value)
        else:
            out[key] = _encode_value(value)
    return out


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


@functools.cache
def _init_fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    """camelCase key -> field, for the fields a dataclass's constructor takes; cached."""
    return {camel(f.name): f for f in dataclasses.fields(cls) if f.init}


def _decode(tp: Any, value: Any, where: str) -> Any:
    """Decode ``value`` as type ``tp`` (a dataclass, enum, scalar, list/dict/optional of those)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) != 1:
            raise TypeError(f"unsupported union {tp} at {where}")
        return _decode(args[0], value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ModelError(f"{where}: expected a list")
        (item,) = typing.get_args(tp)
        return [_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ModelError(f"{where}: expected a mapping")
        _k, item = typing.get_args(tp)
        return {str(k): _decode(item, v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ModelError(f"{where}: expected a mapping")
        hints = _hints(tp)
        by_key = _init_fields(tp)
        unknown = value.keys() - by_key.keys()
        if unknown:
            raise ModelError(f"{where}: unknown keys {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, f in by_key.items():
            if key not in value:
                continue
            if f.name == "resource_version":
                try:
                    kwargs[f.name] = int(value[key])
                except (TypeError, ValueError) as exc:
                    raise ModelError(f"{where}.{key}: not a resource version: {value[key]!r}") from exc
            else:
                kwargs[f.name] = _decode(hints[f.name], value[key], f"{where}.{key}")
        try:
            return tp(**kwargs)
        except TypeError as exc:  # missing required field
            raise ModelError(f"{where}: {exc}") from exc
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError as exc:
            raise ModelError(f"{where}: {value!r} is not one of {[m.value for m in tp]}") from exc
    if tp is bytes:
        if not isinstance(value, str):
            raise ModelError(f"{where}: expected base64 text")
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise ModelError(f"{where}: not standard base64: {exc}") from exc
    if tp is datetime:
        try:
            return _parse_time(value)
        except ValueError as exc:
            raise ModelError(f"{where}: {exc}") from exc
    if tp is bool:
        if not isinstance(value, bool):
            raise ModelError(f"{where}: expected a boolean")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ModelError(f"{where}: expected an integer")
        return value
    if tp is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ModelError(f"{where}: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ModelError(f"{where}: expected a string")
        return value
    if tp is Any:
        return value
    raise TypeError(f"unsupported field type {tp!r} at {where}")
