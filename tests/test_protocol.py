"""Tests of the gateway protocol codec (wasmbed.gateway.protocol) and of docs/protocol.md examples.

cbor2 is the independent reference: what we encode must decode with it, and what it encodes
(inside the profile) must decode with our strict decoder. The C side is covered by test_cbor_c.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import cbor2
import pytest

from wasmbed.gateway.protocol import (
    INITIAL_MAX_FRAME_SIZE,
    MESSAGE_TYPES,
    MIN_FRAME_SIZE,
    RESERVED_TAGS,
    AppLog,
    AppMessage,
    AppMetrics,
    AppStart,
    AppState,
    AppStatus,
    AppStop,
    DeployBegin,
    DeployChunk,
    DeployCommit,
    DeployResult,
    EnrollRequest,
    EnrollResult,
    EnrollStatus,
    Envelope,
    ErrorCode,
    ErrorMessage,
    FrameReader,
    Heartbeat,
    HeartbeatAck,
    Hello,
    HelloAck,
    Message,
    ProtocolError,
    Publish,
    Tag,
    agree_frame_size,
    decode_frame,
    dumps,
    encode_frame,
    loads,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
UUID = bytes.fromhex("6f1c2a8e3b7d4e0f9a1b2c3d4e5f6071")
# Placeholders shaped like DER SEQUENCEs: the protocol layer carries CSR and certificate opaquely.
CSR = bytes.fromhex("3040") + bytes(range(64))
CERT = bytes.fromhex("3050") + bytes(range(80))
TOKEN = bytes(range(0xA0, 0xB0))
SHA256 = bytes(range(0x20, 0x40))

# The examples printed in docs/protocol.md, by name.
EXAMPLES: dict[str, Envelope] = {
    "hello": Envelope(1, Hello(1, "mps2-an385", "0.1.0", 4_190_208, 262_144, ("wasm-mvp", "bulk-memory"), 4096)),
    "hello_ack": Envelope(1, HelloAck(1, 4096, 1_767_225_600_000, 30_000)),
    "enroll_request": Envelope(2, EnrollRequest(CSR, "mps2-an385", TOKEN)),
    "enroll_result": Envelope(2, EnrollResult(EnrollStatus.ACCEPTED, "mps2-an385-6f1c2a8e", UUID, CERT)),
    "enroll_pending": Envelope(2, EnrollResult(EnrollStatus.PENDING)),
    "enroll_rejected": Envelope(2, EnrollResult(EnrollStatus.REJECTED, reason="pairing mode off")),
    "heartbeat": Envelope(3, Heartbeat(123_456, 3_900_000, (AppState(1, 3), AppState(2, 4)))),
    "heartbeat_ack": Envelope(3, HeartbeatAck(1_767_225_630_000)),
    "error": Envelope(0, ErrorMessage(ErrorCode.MALFORMED_CBOR, "truncated at offset 7")),
    # App messages (section 7.8 onwards).
    "deploy_begin": Envelope(4, DeployBegin(1, "blinky", 293, SHA256, cbor2.dumps({"period_ms": "250"}), 1, 1000, 1)),
    "deploy_chunk": Envelope(5, DeployChunk(1, 0, bytes.fromhex("0061736d0100000001080260017f0060000000"))),
    "deploy_result": Envelope(5, DeployResult(1, 0, 19)),
    "deploy_commit": Envelope(9, DeployCommit(1)),
    "deploy_result_hash": Envelope(9, DeployResult(1, 4, 293, "sha256 mismatch")),
    "app_start": Envelope(10, AppStart(1)),
    "app_stop": Envelope(11, AppStop(1, True)),
    "app_status": Envelope(10, AppStatus(1, 3, "", 0, AppMetrics(1, 0, 1, 2))),
    "app_status_failed": Envelope(7, AppStatus(1, 4, "time budget exceeded", 2, AppMetrics(12, 1, 1, 1000))),
    "app_log": Envelope(8, AppLog(1, 1, 123_456, "hello from wasm")),
    "publish": Envelope(9, Publish(1, "temperature", b"31.500")),
    "message": Envelope(12, AppMessage(1, "threshold", b"25000")),
}


def doc_examples() -> dict[str, bytes]:
    text = DOC.read_text()
    blocks = re.findall(r"<!-- example: (\w+) -->\s*```hex\n(.*?)```", text, flags=re.S)
    return {name: bytes.fromhex("".join(body.split())) for name, body in blocks}


# -- docs ------------------------------------------------------------------------------------------


def test_doc_examples_match_the_encoder() -> None:
    docs = doc_examples()
    assert set(docs) == set(EXAMPLES)
    for name, env in EXAMPLES.items():
        frame = docs[name]
        assert frame == encode_frame(env), name
        assert cbor2.loads(frame[4:]) == env.to_item(), name  # independent decoder
        assert decode_frame(frame) == env, name


def test_doc_lists_every_tag_and_error_code() -> None:
    text = DOC.read_text()
    for tag in Tag:
        assert re.search(rf"^\| {tag.value} \| `{tag.name.lower()}` \|", text, flags=re.M), tag
    for code in ErrorCode:
        assert re.search(rf"^\| {code.value} \| `{code.name}` \|", text, flags=re.M), code


# -- strict CBOR decoder -----------------------------------------------------------------------------

VALID: list[Any] = [
    0,
    23,
    24,
    255,
    256,
    65535,
    65536,
    2**32 - 1,
    2**32,
    2**64 - 1,
    -1,
    -24,
    -25,
    -(2**64),
    b"",
    b"\x00" * 300,
    "",
    "\u00e9\u20ac\U0001d11e",
    [],
    [1, [2, [3]]],
    {},
    {1: "a", "k": [b"x", None]},
    True,
    False,
    None,
]


@pytest.mark.parametrize("value", VALID, ids=repr)
def test_strict_decoder_reads_cbor2_output(value: Any) -> None:
    data = cbor2.dumps(value)
    assert loads(data) == value
    assert dumps(value) == data


def test_strict_decoder_keeps_bools_apart_from_ints() -> None:
    assert loads(b"\xf5") is True
    assert loads(b"\x01") == 1 and loads(b"\x01") is not True


@pytest.mark.parametrize(
    ("hexdata", "code"),
    [
        ("9f01ff", ErrorCode.INDEFINITE_LENGTH),
        ("5f4100ff", ErrorCode.INDEFINITE_LENGTH),
        ("1c", ErrorCode.MALFORMED_CBOR),
        ("fe", ErrorCode.MALFORMED_CBOR),
        ("81" * 1000 + "00", ErrorCode.TOO_DEEP),
        ("5bffffffffffffffff", ErrorCode.MALFORMED_CBOR),
        ("9bffffffffffffffff", ErrorCode.MALFORMED_CBOR),
        ("0000", ErrorCode.TRAILING_BYTES),
        ("fb3ff0000000000000", ErrorCode.UNSUPPORTED_ITEM),
        ("c11a5f000000", ErrorCode.UNSUPPORTED_ITEM),
        ("62c328", ErrorCode.MALFORMED_CBOR),
        ("", ErrorCode.MALFORMED_CBOR),
    ],
)
def test_strict_decoder_rejects(hexdata: str, code: ErrorCode) -> None:
    data = bytes.fromhex(hexdata)
    with pytest.raises(ProtocolError) as exc:
        loads(data)
    assert exc.value.code == code


def test_cbor2_alone_would_accept_what_we_reject() -> None:
    # Documents why the strict decoder exists: cbor2 takes indefinite lengths and floats.
    assert cbor2.loads(bytes.fromhex("9f01ff")) == [1]
    assert cbor2.loads(bytes.fromhex("fb3ff0000000000000")) == 1.0


@pytest.mark.parametrize("value", [1.0, 2**64, -(2**64) - 1, {(1, 2): 3}, {True: 1}, {1, 2}, [[[[[[[[[0]]]]]]]]]])
def test_encoder_refuses_values_outside_the_profile(value: Any) -> None:
    with pytest.raises(ValueError):
        dumps(value)


# -- messages ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", list(EXAMPLES.values()), ids=list(EXAMPLES))
def test_message_roundtrip(env: Envelope) -> None:
    msg = env.message
    assert type(msg).from_cbor(msg.to_cbor()) == msg
    assert Message.from_cbor(msg.to_cbor()) == msg
    assert cbor2.loads(msg.to_cbor()) == msg.to_item()
    assert Envelope.from_cbor(env.to_cbor()) == env


def test_from_cbor_of_the_wrong_class_is_unexpected() -> None:
    with pytest.raises(ProtocolError) as exc:
        Hello.from_cbor(HeartbeatAck(5).to_cbor())
    assert exc.value.code == ErrorCode.UNEXPECTED_MESSAGE


def test_message_types_cover_tags_and_skip_reserved() -> None:
    assert sorted(MESSAGE_TYPES) == [t.value for t in Tag]
    assert not set(MESSAGE_TYPES) & set(RESERVED_TAGS)
    for tag in (0, 8, 15, 26, 47, 48, 1000):
        with pytest.raises(ProtocolError) as exc:
            Envelope.from_cbor(cbor2.dumps([1, 42, [tag]]))
        assert exc.value.code == ErrorCode.UNKNOWN_MESSAGE and exc.value.message_id == 42


@pytest.mark.parametrize(
    "build",
    [
        lambda: Hello(0, "b", "v", 0, 0, (), 1024),
        lambda: Hello(1, "", "v", 0, 0, (), 1024),
        lambda: Hello(1, "b" * 33, "v", 0, 0, (), 1024),
        lambda: Hello(1, "\u00e9" * 17, "v", 0, 0, (), 1024),  # 34 bytes although 17 characters
        lambda: Hello(1, "b", "v", -1, 0, (), 1024),
        lambda: Hello(1, "b", "v", True, 0, (), 1024),
        lambda: Hello(1, "b", "v", 0, 2**32, (), 1024),
        lambda: Hello(1, "b", "v", 0, 0, ("",), 1024),
        lambda: Hello(1, "b", "v", 0, 0, ("f",) * 17, 1024),
        lambda: Hello(1, "b", "v", 0, 0, (), MIN_FRAME_SIZE - 1),
        lambda: Hello(1, "b", "v", 0, 0, (), 1024.0),
        lambda: HelloAck(1, 4096, 0, 999),
        lambda: HelloAck(1, 4096, 2**64, 30_000),
        lambda: EnrollRequest(b"", "b"),
        lambda: EnrollRequest(bytes(601), "b"),
        lambda: EnrollRequest(bytearray(b"k"), "b"),
        lambda: EnrollRequest(b"k", "b", bytes(33)),
        lambda: EnrollRequest(b"k", "b", "token"),
        lambda: EnrollResult(EnrollStatus.ACCEPTED, "dev", b"", CERT),
        lambda: EnrollResult(EnrollStatus.ACCEPTED, "", UUID, CERT),
        lambda: EnrollResult(EnrollStatus.ACCEPTED, "d" * 64, UUID, CERT),
        lambda: EnrollResult(EnrollStatus.ACCEPTED, "dev", UUID),
        lambda: EnrollResult(EnrollStatus.ACCEPTED, "dev", UUID, bytes(1025)),
        lambda: EnrollResult(EnrollStatus.REJECTED, "dev", b""),
        lambda: EnrollResult(EnrollStatus.PENDING, certificate=CERT),
        lambda: EnrollResult(EnrollStatus.REJECTED, reason="x" * 129),
        lambda: EnrollResult(3),
        lambda: Heartbeat(0, 0, (AppState(1, 1),) * 17),
        lambda: Heartbeat(0, 0, ((1, 2),)),
        lambda: AppState(1, 256),
        lambda: AppState(2**32, 0),
        lambda: HeartbeatAck(-1),
        lambda: ErrorMessage(0, ""),
        lambda: ErrorMessage(65536, ""),
        lambda: ErrorMessage(1, "x" * 129),
        lambda: Envelope(2**32, HeartbeatAck(0)),
    ],
)
def test_invalid_messages_cannot_be_built(build: Any) -> None:
    with pytest.raises(ProtocolError) as exc:
        build()
    assert exc.value.code == ErrorCode.BAD_FIELDS


def test_limits_are_inclusive() -> None:
    hello = Hello(2**32 - 1, "b" * 32, "v" * 32, 2**32 - 1, 2**32 - 1, ("f" * 32,) * 16, 2**32 - 1)
    assert decode_frame(encode_frame(Envelope(2**32 - 1, hello)), 2**20).message == hello
    assert HelloAck(1, MIN_FRAME_SIZE, 2**64 - 1, 3_600_000).heartbeat_interval_ms == 3_600_000
    assert len(EnrollRequest(bytes(600), "b", bytes(32)).csr) == 600
    assert EnrollResult(0, "d" * 63, UUID, bytes(1024), "r" * 128).device_name == "d" * 63
    assert ErrorMessage(65535, "\u00e9" * 64).code == 65535  # 128 bytes of UTF-8


def test_heartbeat_ignores_extension_items_in_app_entries() -> None:
    item = [1, 9, [5, 10, 20, [[1, 3, "future", [1, 2]], [7, 99]]]]
    env = Envelope.from_cbor(cbor2.dumps(item))
    assert env.message == Heartbeat(10, 20, (AppState(1, 3), AppState(7, 99)))


def test_bad_fields_error_carries_the_message_id() -> None:
    with pytest.raises(ProtocolError) as exc:
        Envelope.from_cbor(cbor2.dumps([1, 12, [Tag.HEARTBEAT_ACK, "now"]]))
    assert exc.value.code == ErrorCode.BAD_FIELDS and exc.value.message_id == 12


def test_error_reply_text_is_cut_on_a_character_boundary() -> None:
    exc = ProtocolError(ErrorCode.BAD_FIELDS, "a" * 127 + "\u00e9" + "b" * 50)
    msg = ErrorMessage.from_exception(exc)
    assert msg.code == ErrorCode.BAD_FIELDS
    assert msg.text == "a" * 127
    assert decode_frame(encode_frame(Envelope(0, msg))).message == msg


def test_agree_frame_size() -> None:
    assert agree_frame_size(4096, 65536) == 4096
    assert agree_frame_size(1 << 20, 65536) == 65536
    assert agree_frame_size(1024, 1024) == 1024
    with pytest.raises(ValueError):
        agree_frame_size(4096, 512)


# -- framing ----------------------------------------------------------------------------------------


def test_encode_frame_prefixes_length_and_enforces_limit() -> None:
    env = EXAMPLES["enroll_request"]
    frame = encode_frame(env)
    n = len(frame) - 4
    assert int.from_bytes(frame[:4], "big") == n == 3 + 2 + (2 + 66) + (1 + 10) + (1 + 16)
    assert encode_frame(env, n) == frame
    with pytest.raises(ProtocolError) as exc:
        encode_frame(env, n - 1)
    assert exc.value.code == ErrorCode.FRAME_TOO_LARGE


def test_frame_reader_byte_by_byte_and_in_one_chunk() -> None:
    envs = list(EXAMPLES.values())
    stream = b"".join(encode_frame(e) for e in envs)
    reader = FrameReader()
    got = [body for i in range(len(stream)) for body in reader.feed(stream[i : i + 1])]
    assert [Envelope.from_cbor(b) for b in got] == envs
    assert reader.buffered == 0
    reader = FrameReader()
    assert [Envelope.from_cbor(b) for b in reader.feed(stream)] == envs


def test_frame_reader_rejects_oversize_before_the_body_arrives() -> None:
    reader = FrameReader(max_frame_size=INITIAL_MAX_FRAME_SIZE)
    assert list(reader.feed(b"\x00\x00\x04")) == []
    with pytest.raises(ProtocolError) as exc:
        list(reader.feed(b"\x01"))  # length 1025: refused on the 4th header byte
    assert exc.value.code == ErrorCode.FRAME_TOO_LARGE
    assert reader.buffered == 0
    with pytest.raises(ProtocolError):  # stays failed: the session must close
        list(reader.feed(encode_frame(EXAMPLES["hello"])))


def test_frame_reader_delivers_frames_before_a_bad_header() -> None:
    good = encode_frame(EXAMPLES["heartbeat"])
    reader = FrameReader()
    it = reader.feed(good + b"\xff\xff\xff\xff")
    assert Envelope.from_cbor(next(it)) == EXAMPLES["heartbeat"]
    with pytest.raises(ProtocolError) as exc:
        next(it)
    assert exc.value.code == ErrorCode.FRAME_TOO_LARGE


def test_frame_reader_limit_changes_after_negotiation() -> None:
    big = Envelope(4, EnrollRequest(bytes(600), "b" * 32, bytes(32)))
    hello = Envelope(1, Hello(1, "b", "v", 0, 0, ("f" * 32,) * 16, 4096))
    frame = encode_frame(hello) + encode_frame(big)
    reader = FrameReader(max_frame_size=600)
    it = reader.feed(frame)
    assert Envelope.from_cbor(next(it)) == hello
    reader.max_frame_size = agree_frame_size(4096, 65536)  # hello_ack sent
    assert Envelope.from_cbor(next(it)) == big


def test_decode_frame_checks_header_against_body() -> None:
    frame = encode_frame(EXAMPLES["heartbeat_ack"])
    for bad in (frame[:-1], frame + b"\x00", frame[:3]):
        with pytest.raises(ProtocolError) as exc:
            decode_frame(bad)
        assert exc.value.code == ErrorCode.MALFORMED_CBOR
