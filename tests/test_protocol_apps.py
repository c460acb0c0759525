"""App messages (tags 16..25, docs/protocol.md section 6.3 and 7.8-7.17): Python codec, C codec and the
simulator's independent codec agree, both ways, including limits and malformed frames."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import cbor2
import pytest
from test_cbor_c import build, json_form, run_tool  # noqa: F401 - build is a fixture

from wasmbed.gateway import simulator as s
from wasmbed.gateway.protocol import (
    CHUNK_MAX,
    DEVICE_TO_GATEWAY,
    GATEWAY_TO_DEVICE,
    AppError,
    AppLog,
    AppMessage,
    AppMetrics,
    AppStart,
    AppStatus,
    AppStop,
    DeployBegin,
    DeployChunk,
    DeployCommit,
    DeployResult,
    Envelope,
    ErrorCode,
    ProtocolError,
    Publish,
    Tag,
    chunk_capacity,
    decode_frame,
    encode_frame,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
SHA = bytes(range(32))
U32 = 2**32 - 1

APP_MESSAGES = [
    Envelope(1, DeployBegin(1, "hello", 300, SHA)),
    Envelope(U32, DeployBegin(U32, "n" * 32, U32, SHA, bytes(512), 65_536, 60_000, 2)),
    Envelope(2, DeployBegin(7, "\u00e9" * 16, 1, SHA, cbor2.dumps({"k": "v"}), 0, 1, 1)),
    Envelope(3, DeployChunk(1, 0, b"\x00asm")),
    Envelope(3, DeployChunk(U32, U32, bytes(range(256)) * 6)),
    Envelope(4, DeployCommit(1)),
    Envelope(5, DeployResult(1, AppError.OK, 1536)),
    Envelope(5, DeployResult(U32, U32, U32, "t" * 128)),
    Envelope(6, AppStart(9)),
    Envelope(7, AppStop(9, False)),
    Envelope(7, AppStop(9, True)),
    Envelope(8, AppStatus(9, 3)),
    Envelope(8, AppStatus(9, 255, "e" * 128, U32, AppMetrics(U32, U32, 65_536, U32))),
    Envelope(9, AppLog(9, 0, 2**64 - 1, "")),
    Envelope(9, AppLog(9, 3, 0, "\u20ac" * 85)),  # 255 bytes
    Envelope(10, Publish(9, "t" * 64, bytes(1024))),
    Envelope(10, Publish(9, "temperature", b"")),
    Envelope(11, AppMessage(9, "x", b"\x00\xff")),
]


def _frame(item: Any) -> bytes:
    body = cbor2.dumps(item)
    return len(body).to_bytes(4, "big") + body


@pytest.mark.parametrize("env", APP_MESSAGES, ids=lambda e: type(e.message).__name__)
def test_python_app_frames_decode_in_c(build: dict[str, Path], env: Envelope) -> None:  # noqa: F811
    frame = encode_frame(env)
    out = run_tool(build, "proto", str(2**20), stdin=frame.hex()).splitlines()
    assert json.loads(out[0]) == json_form(env.to_item())
    assert out[1] == f"RE {frame.hex()}"  # C re-encodes byte-identically
    assert decode_frame(frame, 2**20) == env
    assert cbor2.loads(frame[4:]) == env.to_item()


C_SAMPLES = {
    "deploy_result": Envelope(7, DeployResult(3, 0, 1536)),
    "deploy_result_error": Envelope(7, DeployResult(3, AppError.LOAD_FAILED, 0, "missing imported function")),
    "app_status": Envelope(7, AppStatus(3, 4, "time budget exceeded", 2, AppMetrics(U32, 1, 1, 1000))),
    "app_log": Envelope(7, AppLog(3, 1, 2**32, "hello from wasm \u00e9")),
    "publish": Envelope(7, Publish(3, "temperature", b"31.500")),
}


@pytest.mark.parametrize("name", sorted(C_SAMPLES))
def test_c_app_frames_decode_in_python(build: dict[str, Path], name: str) -> None:  # noqa: F811
    frame = bytes.fromhex(run_tool(build, "sample", name, stdin=""))
    assert decode_frame(frame) == C_SAMPLES[name]
    assert cbor2.loads(frame[4:]) == C_SAMPLES[name].to_item()


BEGIN = [1, "app", 10, SHA, b"", 1, 1000, 0]
STATUS = [1, 3, "", 0, [1, 2, 3, 4]]
BAD: list[tuple[str, bytes, ErrorCode, int]] = [
    ("begin app_id 0", _frame([1, 5, [16, 0, *BEGIN[1:]]]), ErrorCode.BAD_FIELDS, 5),
    ("begin 7 fields", _frame([1, 5, [16, *BEGIN[:-1]]]), ErrorCode.BAD_FIELDS, 5),
    ("begin 9 fields", _frame([1, 5, [16, *BEGIN, 0]]), ErrorCode.BAD_FIELDS, 5),
    ("begin name empty", _frame([1, 5, [16, 1, "", *BEGIN[2:]]]), ErrorCode.BAD_FIELDS, 5),
    ("begin name 33", _frame([1, 5, [16, 1, "n" * 33, *BEGIN[2:]]]), ErrorCode.BAD_FIELDS, 5),
    ("begin size 0", _frame([1, 5, [16, 1, "a", 0, *BEGIN[3:]]]), ErrorCode.BAD_FIELDS, 5),
    ("begin sha 31", _frame([1, 5, [16, 1, "a", 10, SHA[:31], *BEGIN[4:]]]), ErrorCode.BAD_FIELDS, 5),
    ("begin sha text", _frame([1, 5, [16, 1, "a", 10, "x" * 32, *BEGIN[4:]]]), ErrorCode.BAD_FIELDS, 5),
    ("begin config 513", _frame([1, 5, [16, *BEGIN[:4], bytes(513), 1, 1000, 0]]), ErrorCode.BAD_FIELDS, 5),
    ("begin config map", _frame([1, 5, [16, *BEGIN[:4], {"k": "v"}, 1, 1000, 0]]), ErrorCode.BAD_FIELDS, 5),
    ("begin pages 65537", _frame([1, 5, [16, *BEGIN[:5], 65_537, 1000, 0]]), ErrorCode.BAD_FIELDS, 5),
    ("begin budget 0", _frame([1, 5, [16, *BEGIN[:6], 0, 0]]), ErrorCode.BAD_FIELDS, 5),
    ("begin budget 60001", _frame([1, 5, [16, *BEGIN[:6], 60_001, 0]]), ErrorCode.BAD_FIELDS, 5),
    ("begin restart 3", _frame([1, 5, [16, *BEGIN[:7], 3]]), ErrorCode.BAD_FIELDS, 5),
    ("begin restart bool", _frame([1, 5, [16, *BEGIN[:7], True]]), ErrorCode.BAD_FIELDS, 5),
    ("chunk empty", _frame([1, 6, [17, 1, 0, b""]]), ErrorCode.BAD_FIELDS, 6),
    ("chunk 1537", _frame([1, 6, [17, 1, 0, bytes(1537)]]), ErrorCode.BAD_FIELDS, 6),
    ("chunk offset 2^32", _frame([1, 6, [17, 1, 2**32, b"x"]]), ErrorCode.BAD_FIELDS, 6),
    ("chunk offset negative", _frame([1, 6, [17, 1, -1, b"x"]]), ErrorCode.BAD_FIELDS, 6),
    ("commit app_id 0", _frame([1, 6, [18, 0]]), ErrorCode.BAD_FIELDS, 6),
    ("commit 2 fields", _frame([1, 6, [18, 1, 1]]), ErrorCode.BAD_FIELDS, 6),
    ("result text 129", _frame([1, 6, [19, 1, 0, 0, "t" * 129]]), ErrorCode.BAD_FIELDS, 6),
    ("result code text", _frame([1, 6, [19, 1, "0", 0, ""]]), ErrorCode.BAD_FIELDS, 6),
    ("start no fields", _frame([1, 6, [20]]), ErrorCode.BAD_FIELDS, 6),
    ("stop remove int", _frame([1, 6, [21, 1, 1]]), ErrorCode.BAD_FIELDS, 6),
    ("stop remove null", _frame([1, 6, [21, 1, None]]), ErrorCode.BAD_FIELDS, 6),
    ("status state 256", _frame([1, 6, [22, 1, 256, "", 0, [1, 2, 3, 4]]]), ErrorCode.BAD_FIELDS, 6),
    ("status error 129", _frame([1, 6, [22, 1, 4, "e" * 129, 0, [1, 2, 3, 4]]]), ErrorCode.BAD_FIELDS, 6),
    ("status metrics 3", _frame([1, 6, [22, *STATUS[:4], [1, 2, 3]]]), ErrorCode.BAD_FIELDS, 6),
    ("status metrics 5", _frame([1, 6, [22, *STATUS[:4], [1, 2, 3, 4, 5]]]), ErrorCode.BAD_FIELDS, 6),
    ("status metrics int", _frame([1, 6, [22, *STATUS[:4], 7]]), ErrorCode.BAD_FIELDS, 6),
    ("status metric 2^32", _frame([1, 6, [22, *STATUS[:4], [1, 2**32, 3, 4]]]), ErrorCode.BAD_FIELDS, 6),
    ("status metric bool", _frame([1, 6, [22, *STATUS[:4], [1, 2, True, 4]]]), ErrorCode.BAD_FIELDS, 6),
    ("log level 4", _frame([1, 6, [23, 1, 4, 0, "x"]]), ErrorCode.BAD_FIELDS, 6),
    ("log text 257", _frame([1, 6, [23, 1, 1, 0, "x" * 257]]), ErrorCode.BAD_FIELDS, 6),
    ("log uptime bignum", _frame([1, 6, [23, 1, 1, 2**64, "x"]]), ErrorCode.UNSUPPORTED_ITEM, 0),
    ("publish topic empty", _frame([1, 6, [24, 1, "", b""]]), ErrorCode.BAD_FIELDS, 6),
    ("publish topic 65", _frame([1, 6, [24, 1, "t" * 65, b""]]), ErrorCode.BAD_FIELDS, 6),
    ("publish payload 1025", _frame([1, 6, [24, 1, "t", bytes(1025)]]), ErrorCode.BAD_FIELDS, 6),
    ("publish payload text", _frame([1, 6, [24, 1, "t", "p"]]), ErrorCode.BAD_FIELDS, 6),
    ("message app_id 0", _frame([1, 6, [25, 0, "t", b""]]), ErrorCode.BAD_FIELDS, 6),
    ("message topic bytes", _frame([1, 6, [25, 1, b"t", b""]]), ErrorCode.BAD_FIELDS, 6),
    ("message float payload", _frame([1, 6, [25, 1, "t", 1.5]]), ErrorCode.UNSUPPORTED_ITEM, 0),
]


@pytest.mark.parametrize(("frame", "code", "msg_id"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_app_frames_rejected_by_both(build: dict[str, Path], frame: bytes, code: ErrorCode,  # noqa: F811
                                         msg_id: int) -> None:
    assert run_tool(build, "proto", str(2**20), stdin=frame.hex()) == f"ERR {int(code)} {msg_id}"
    with pytest.raises(ProtocolError) as exc:
        decode_frame(frame, 2**20)
    assert exc.value.code == code and (exc.value.message_id or 0) == msg_id


def test_largest_chunk_needs_a_larger_agreed_frame(build: dict[str, Path]) -> None:  # noqa: F811
    env = Envelope(U32, DeployChunk(U32, U32, bytes(CHUNK_MAX)))
    frame = encode_frame(env)
    assert len(frame) - 4 == CHUNK_MAX + 22 and chunk_capacity(CHUNK_MAX + 22) == CHUNK_MAX
    assert run_tool(build, "proto", stdin=frame.hex()) == f"ERR {int(ErrorCode.FRAME_TOO_LARGE)} 0"
    # With the minimum frame size, the capacity still fits worst-case ids.
    small = Envelope(U32, DeployChunk(U32, U32, bytes(chunk_capacity(1024))))
    assert len(encode_frame(small)) - 4 == 1024
    assert run_tool(build, "proto", stdin=encode_frame(small).hex()).startswith("[1,4294967295,[17,")


@pytest.mark.parametrize("build_msg", [
    lambda: DeployBegin(0, "a", 1, SHA),
    lambda: DeployBegin(1, "a", 1, SHA, time_budget_ms=60_001),
    lambda: DeployBegin(1, "a", 1, SHA, restart=3),
    lambda: DeployBegin(1, "a", 1, SHA, config="x"),
    lambda: DeployChunk(1, 0, b""),
    lambda: AppStop(1, 1),
    lambda: AppStatus(1, 3, metrics=(1, 2, 3, 4)),
    lambda: AppMetrics(-1),
    lambda: AppLog(1, 1, 0, "x" * 257),
    lambda: Publish(1, "", b""),
    lambda: AppMessage(1, "t", bytes(1025)),
])
def test_invalid_app_messages_cannot_be_built(build_msg: Any) -> None:
    with pytest.raises(ProtocolError) as exc:
        build_msg()
    assert exc.value.code == ErrorCode.BAD_FIELDS


def test_directions_cover_every_tag() -> None:
    assert set(Tag) == GATEWAY_TO_DEVICE | DEVICE_TO_GATEWAY
    assert {Tag.ERROR} == GATEWAY_TO_DEVICE & DEVICE_TO_GATEWAY


def test_doc_lists_app_result_codes() -> None:
    text = DOC.read_text()
    for code in AppError:
        assert re.search(rf"^\| {code.value} \| `{code.name}` \|", text, flags=re.M), code


# -- the simulator's independent codec ------------------------------------------------------------------

@pytest.mark.parametrize("env", [e for e in APP_MESSAGES if e.message.TAG in GATEWAY_TO_DEVICE],
                         ids=lambda e: type(e.message).__name__)
def test_gateway_app_frames_decode_with_the_simulator_codec(env: Envelope) -> None:
    frame = encode_frame(env)
    (body,) = s.Deframer(2**20).feed(frame)
    assert s.decode(body) == (env.message_id, env.message.TAG, env.message.fields())


def test_simulator_app_frames_decode_with_the_gateway_codec() -> None:
    cases = [
        (s.encode(5, s.DEPLOY_RESULT, 1, 0, 1000, ""), DeployResult(1, 0, 1000)),
        (s.encode(6, s.APP_STATUS, 1, 4, "boom", 1, [1, 2, 1, 5]), AppStatus(1, 4, "boom", 1, AppMetrics(1, 2, 1, 5))),
        (s.encode(7, s.APP_LOG, 1, 1, 99, "hi"), AppLog(1, 1, 99, "hi")),
        (s.encode(8, s.PUBLISH, 1, "t", b"p"), Publish(1, "t", b"p")),
    ]
    for frame, msg in cases:
        assert decode_frame(frame).message == msg
        assert frame == encode_frame(Envelope(decode_frame(frame).message_id, msg))


@pytest.mark.parametrize("item", [
    [1, 1, [16, 0, "a", 1, SHA, b"", 1, 1000, 0]],
    [1, 1, [16, 1, "a", 1, SHA[:5], b"", 1, 1000, 0]],
    [1, 1, [17, 1, 0, b""]],
    [1, 1, [21, 1, 0]],
    [1, 1, [25, 1, "", b""]],
    [1, 1, [19, 1, 0, 0, ""]],  # a device -> gateway message coming from the gateway
])
def test_simulator_codec_rejects_bad_app_messages(item: Any) -> None:
    with pytest.raises(s.WireError):
        s.decode(cbor2.dumps(item))
