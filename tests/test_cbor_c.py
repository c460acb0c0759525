"""Cross-checks of the firmware C codec (firmware/core/cbor.c, proto.c) against independent code.

The C sources are compiled natively (with ASan/UBSan when the compiler supports them) into a
temporary directory and driven through firmware/tests/cbor_tool.c. Directions covered: C encoder
-> cbor2 decoder, cbor2 encoder -> C decoder, Python protocol frames -> C, C frames -> Python, and
one corpus of malformed input that both sides must reject with the same error code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import cbor2
import pytest

from wasmbed.gateway.protocol import (
    AppState,
    EnrollRequest,
    EnrollResult,
    Envelope,
    ErrorCode,
    ErrorMessage,
    Heartbeat,
    HeartbeatAck,
    Hello,
    HelloAck,
    ProtocolError,
    decode_frame,
    encode_frame,
    loads,
)

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "firmware" / "core"
CTESTS = ROOT / "firmware" / "tests"
GCC = shutil.which("gcc")

pytestmark = pytest.mark.skipif(GCC is None, reason="gcc not installed")

BASE_FLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1", f"-I{CORE}"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
ENV = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1"}


def _sanitizers_work(tmp: Path) -> bool:
    src = tmp / "probe.c"
    src.write_text("int main(void) { return 0; }\n")
    exe = tmp / "probe"
    build = subprocess.run([GCC, *SANITIZE, str(src), "-o", str(exe)], capture_output=True)  # type: ignore[list-item]
    return build.returncode == 0 and subprocess.run([str(exe)], env=ENV).returncode == 0


def _compile(tmp: Path, name: str, sources: list[Path], extra: list[str]) -> Path:
    exe = tmp / name
    cmd = [GCC, *BASE_FLAGS, *extra, *map(str, sources), "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True)  # type: ignore[arg-type]
    assert res.returncode == 0, f"compile failed: {' '.join(cmd)}\n{res.stderr}"
    return exe


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("cbor_c")
    extra = SANITIZE if _sanitizers_work(tmp) else []
    libs = [CORE / "cbor.c", CORE / "proto.c"]
    return {
        "tool": _compile(tmp, "cbor_tool", [CTESTS / "cbor_tool.c", *libs], [*extra, "-D_POSIX_C_SOURCE=200809L"]),
        "unit": _compile(tmp, "unit", [CTESTS / "test_proto_unit.c", *libs], extra),
    }


def run_tool(build: dict[str, Path], *args: str, stdin: str) -> str:
    res = subprocess.run([str(build["tool"]), *args], input=stdin, capture_output=True, text=True, env=ENV)
    assert res.returncode == 0, f"cbor_tool {args} exited {res.returncode}: {res.stderr}"
    assert "runtime error" not in res.stderr and "Sanitizer" not in res.stderr, res.stderr
    return res.stdout.strip()


# -- value <-> harness forms ------------------------------------------------------------------------


def json_form(v: Any) -> Any:
    """The harness's JSON-ish rendering of a decoded value."""
    if isinstance(v, bool) or v is None or isinstance(v, int):
        return v
    if isinstance(v, bytes):
        return {"b": v.hex()}
    if isinstance(v, str):
        return {"t": v.encode().hex()}
    if isinstance(v, list | tuple):
        return [json_form(x) for x in v]
    if isinstance(v, dict):
        return {"m": [[json_form(k), json_form(x)] for k, x in v.items()]}
    raise TypeError(type(v))


def tokens(v: Any) -> list[str]:
    """Encoder commands for cbor_tool enc that build `v`."""
    if v is True:
        return ["T"]
    if v is False:
        return ["F"]
    if v is None:
        return ["N"]
    if isinstance(v, int):
        return ["u", str(v)] if v >= 0 else ["n", str(-1 - v)]
    if isinstance(v, bytes):
        return ["b", v.hex() or "-"]
    if isinstance(v, str):
        return ["t", v.encode().hex() or "-"]
    if isinstance(v, list):
        return ["a", str(len(v)), *(t for x in v for t in tokens(x))]
    if isinstance(v, dict):
        return ["m", str(len(v)), *(t for k, x in v.items() for t in (*tokens(k), *tokens(x)))]
    raise TypeError(type(v))


INTS = [
    0,
    1,
    23,
    24,
    255,
    256,
    65535,
    65536,
    2**32 - 1,
    2**32,
    2**63,
    2**64 - 1,
    -1,
    -24,
    -25,
    -256,
    -257,
    -65536,
    -65537,
    -(2**32),
    -(2**32) - 1,
    -(2**63),
    -(2**64),
]
VALUES: list[Any] = [
    *INTS,
    b"",
    b"\x00",
    bytes(range(23)),
    bytes(24),
    bytes(range(256)) * 1,
    bytes(255),
    bytes(65535),
    bytes(65536),
    "",
    "a",
    "h\u00e9llo \u20ac \U0001d11e",
    "x" * 23,
    "y" * 24,
    "z" * 300,
    [],
    [[]],
    [1, [2, [3, [4, [5, [6, [7]]]]]]],
    list(range(24)),
    [None, True, False, -1, b"\xff", "s"],
    {},
    {1: 2},
    {"a": [1, 2], -5: {"k": None}},
    {"k" * 30: b"v" * 30, 0: [], 2**40: {}},
    True,
    False,
    None,
]


def _id(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


@pytest.mark.parametrize("value", VALUES, ids=_id)
def test_c_encoder_matches_cbor2(build: dict[str, Path], value: Any) -> None:
    out = run_tool(build, "enc", stdin=" ".join(tokens(value)))
    data = bytes.fromhex(out)
    assert cbor2.loads(data) == value
    # Both encoders use the shortest heads and definite lengths: the bytes must be identical.
    assert data == cbor2.dumps(value)


@pytest.mark.parametrize("value", VALUES, ids=_id)
def test_c_decoder_reads_cbor2(build: dict[str, Path], value: Any) -> None:
    data = cbor2.dumps(value)
    expected = json_form(value)
    assert json.loads(run_tool(build, "dec", stdin=data.hex())) == expected
    assert json.loads(run_tool(build, "rdec", stdin=data.hex())) == expected  # readers alone
    assert loads(data) == value  # and the Python strict decoder agrees


def test_c_encoder_overflow_is_sticky(build: dict[str, Path]) -> None:
    assert run_tool(build, "enc", "3", stdin="u 1000") == "1903e8"
    assert run_tool(build, "enc", "3", stdin="u 1000 u 1 N") == "ERR OVERFLOW 3"
    assert run_tool(build, "enc", "2", stdin="b 0102") == "ERR OVERFLOW 1"


def test_non_preferred_heads_are_accepted_by_both(build: dict[str, Path]) -> None:
    # RFC 8949 decoders accept non-shortest arguments; our encoders never produce them.
    for hexdata, value in [("1800", 0), ("190017", 23), ("3a00000000", -1), ("5800", b""), ("990000", [])]:
        assert json.loads(run_tool(build, "dec", stdin=hexdata)) == json_form(value)
        assert loads(bytes.fromhex(hexdata)) == value


# name, hex, expected code, also valid for the bare readers (no whole-item pre-check)
MALFORMED: list[tuple[str, str, ErrorCode, bool]] = [
    ("empty", "", ErrorCode.MALFORMED_CBOR, True),
    ("truncated uint8 arg", "18", ErrorCode.MALFORMED_CBOR, True),
    ("truncated uint64 arg", "1b000000", ErrorCode.MALFORMED_CBOR, True),
    ("truncated text", "6261", ErrorCode.MALFORMED_CBOR, True),
    ("truncated array", "8301021901", ErrorCode.MALFORMED_CBOR, True),
    ("truncated map value", "a201020319", ErrorCode.MALFORMED_CBOR, True),
    ("indefinite array", "9f01ff", ErrorCode.INDEFINITE_LENGTH, True),
    ("indefinite bytes", "5f4100ff", ErrorCode.INDEFINITE_LENGTH, True),
    ("indefinite text", "7f6161ff", ErrorCode.INDEFINITE_LENGTH, True),
    ("indefinite map", "bf0102ff", ErrorCode.INDEFINITE_LENGTH, True),
    ("indefinite nested", "82019f02ff", ErrorCode.INDEFINITE_LENGTH, True),
    *[
        (f"reserved ai {ai} major {m}", f"{(m << 5) | ai:02x}00", ErrorCode.MALFORMED_CBOR, True)
        for m in (0, 1, 2, 3, 4, 5, 6, 7)
        for ai in (28, 29, 30)
    ],
    ("uint ai 31", "1f", ErrorCode.MALFORMED_CBOR, True),
    ("nint ai 31", "3f", ErrorCode.MALFORMED_CBOR, True),
    ("tag ai 31", "df", ErrorCode.MALFORMED_CBOR, True),
    ("lone break", "ff", ErrorCode.MALFORMED_CBOR, True),
    ("depth 9 arrays", "81" * 9 + "00", ErrorCode.TOO_DEEP, False),
    ("depth 9 empty", "81" * 8 + "80", ErrorCode.TOO_DEEP, False),
    ("depth 1000", "81" * 1000 + "00", ErrorCode.TOO_DEEP, True),
    ("depth 9 maps", "a101" * 9 + "00", ErrorCode.TOO_DEEP, False),
    ("huge bytes length", "5bffffffffffffffff00", ErrorCode.MALFORMED_CBOR, True),
    ("huge text length", "7affffffff61", ErrorCode.MALFORMED_CBOR, True),
    ("huge array count", "9bffffffffffffffff00", ErrorCode.MALFORMED_CBOR, True),
    ("huge map count", "bb800000000000000000", ErrorCode.MALFORMED_CBOR, True),
    ("array count > data", "9a7fffffff0000", ErrorCode.MALFORMED_CBOR, True),
    ("trailing byte", "0000", ErrorCode.TRAILING_BYTES, True),
    ("trailing array", "8001", ErrorCode.TRAILING_BYTES, True),
    ("trailing break", "f6ff", ErrorCode.TRAILING_BYTES, True),
    ("tag", "c06161", ErrorCode.UNSUPPORTED_ITEM, True),
    ("bignum tag", "c249010000000000000000", ErrorCode.UNSUPPORTED_ITEM, True),
    ("float16", "f93c00", ErrorCode.UNSUPPORTED_ITEM, True),
    ("float32", "fa3f800000", ErrorCode.UNSUPPORTED_ITEM, True),
    ("float64", "fb3ff0000000000000", ErrorCode.UNSUPPORTED_ITEM, True),
    ("float64 truncated", "fb3ff0", ErrorCode.MALFORMED_CBOR, True),
    ("float in array", "8201f93c00", ErrorCode.UNSUPPORTED_ITEM, True),
    ("undefined", "f7", ErrorCode.UNSUPPORTED_ITEM, True),
    ("simple 0", "e0", ErrorCode.UNSUPPORTED_ITEM, True),
    ("simple 32", "f820", ErrorCode.UNSUPPORTED_ITEM, True),
    ("simple 24 < 32", "f810", ErrorCode.MALFORMED_CBOR, True),
    ("array map key", "a18000", ErrorCode.UNSUPPORTED_ITEM, False),
    ("null map key", "a1f600", ErrorCode.UNSUPPORTED_ITEM, False),
    ("bytes map key", "a20102410000", ErrorCode.UNSUPPORTED_ITEM, False),
    ("bad utf-8", "62c328", ErrorCode.MALFORMED_CBOR, True),
    ("utf-8 surrogate", "63eda080", ErrorCode.MALFORMED_CBOR, True),
    ("utf-8 overlong", "62c080", ErrorCode.MALFORMED_CBOR, True),
    ("utf-8 > U+10FFFF", "64f4908080", ErrorCode.MALFORMED_CBOR, True),
]
C_NAMES = {
    ErrorCode.MALFORMED_CBOR: "MALFORMED",
    ErrorCode.INDEFINITE_LENGTH: "INDEFINITE",
    ErrorCode.TRAILING_BYTES: "TRAILING",
    ErrorCode.TOO_DEEP: "TOO_DEEP",
    ErrorCode.UNSUPPORTED_ITEM: "UNSUPPORTED",
}


@pytest.mark.parametrize(("hexdata", "code", "readers"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_rejected_by_both(build: dict[str, Path], hexdata: str, code: ErrorCode, readers: bool) -> None:
    assert run_tool(build, "dec", stdin=hexdata) == f"ERR {C_NAMES[code]}"
    if readers:
        assert run_tool(build, "rdec", stdin=hexdata) == f"ERR {C_NAMES[code]}"
    with pytest.raises(ProtocolError) as exc:
        loads(bytes.fromhex(hexdata))
    assert exc.value.code == code


def test_depth_limit_exact(build: dict[str, Path]) -> None:
    ok = "81" * 8 + "00"
    assert json.loads(run_tool(build, "dec", stdin=ok)) == [[[[[[[[0]]]]]]]]
    assert loads(bytes.fromhex(ok)) == [[[[[[[[0]]]]]]]]


# -- message layer ----------------------------------------------------------------------------------

UUID = bytes.fromhex("6f1c2a8e3b7d4e0f9a1b2c3d4e5f6071")
CSR = bytes.fromhex("3040") + bytes(range(64))  # placeholder DER; the codec does not parse it
CERT = bytes.fromhex("3050") + bytes(range(80))
TOKEN = bytes(range(0xA0, 0xB0))
PY_MESSAGES = [
    Envelope(1, Hello(1, "mps2-an385", "0.1.0", 4_190_208, 262_144, ("wasm-mvp", "bulk-memory"), 4096)),
    Envelope(1, HelloAck(1, 4096, 1_767_225_600_000, 30_000)),
    Envelope(2, EnrollRequest(CSR, "mps2-an385", TOKEN)),
    Envelope(2, EnrollRequest(bytes(600), "b" * 32, bytes(32))),
    Envelope(2, EnrollRequest(CSR, "mps2-an385")),
    Envelope(2, EnrollResult(0, "mps2-an385-6f1c2a8e", UUID, CERT)),
    Envelope(2, EnrollResult(0, "d" * 63, UUID, bytes(1024), "r" * 128)),
    Envelope(3, EnrollResult(1, reason="waiting for operator approval")),
    Envelope(4, EnrollResult(2, reason="pairing mode off")),
    Envelope(5, Heartbeat(123_456, 3_900_000, (AppState(1, 3), AppState(2, 4)))),
    Envelope(6, Heartbeat(2**64 - 1, 0)),
    Envelope(5, HeartbeatAck(1_767_225_630_000)),
    Envelope(0, ErrorMessage(ErrorCode.MALFORMED_CBOR, "truncated at offset 7")),
    Envelope(2**32 - 1, ErrorMessage(0xFFFF, "\u00e9" * 64)),
    Envelope(
        9, Hello(2**32 - 1, "b" * 32, "v" * 32, 2**32 - 1, 2**32 - 1, tuple("f" * 32 for _ in range(16)), 2**32 - 1)
    ),
]


@pytest.mark.parametrize("env", PY_MESSAGES, ids=lambda e: type(e.message).__name__)
def test_python_frames_decode_in_c(build: dict[str, Path], env: Envelope) -> None:
    frame = encode_frame(env)
    out = run_tool(build, "proto", str(2**20), stdin=frame.hex()).splitlines()
    assert json.loads(out[0]) == json_form(env.to_item())
    # C re-encodes the decoded struct: byte-identical to the Python (cbor2) encoding.
    assert out[1] == f"RE {frame.hex()}"


C_SAMPLES = {
    "hello": Envelope(7, Hello(1, "mps2-an385", "0.1.0", 4_000_000, 65536, ("wasm-mvp", "bulk-memory"), 4096)),
    "heartbeat": Envelope(7, Heartbeat(2**32, 65535, (AppState(1, 3), AppState(24, 4), AppState(2**32 - 1, 255)))),
    "enroll_request": Envelope(
        7, EnrollRequest(bytes.fromhex("3081d9308180020100301e311c"), "stm32vldiscovery", bytes(range(0xA0, 0xA8)))
    ),
    "enroll_result": Envelope(
        7,
        EnrollResult(
            0,
            "stm32vldiscovery-6f1c2a8e",
            bytes.fromhex("6f1c2a8e") + bytes(12),
            bytes.fromhex("3082019a30820140a003"),
            "token",
        ),
    ),
    "error": Envelope(9, ErrorMessage(ErrorCode.UNKNOWN_MESSAGE, "unknown message tag 99")),
}


@pytest.mark.parametrize("name", sorted(C_SAMPLES))
def test_c_frames_decode_in_python(build: dict[str, Path], name: str) -> None:
    frame = bytes.fromhex(run_tool(build, "sample", name, stdin=""))
    expected = C_SAMPLES[name]
    assert decode_frame(frame) == expected
    assert cbor2.loads(frame[4:]) == expected.to_item()  # independent decoder
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4


def _frame(item: Any) -> bytes:
    body = cbor2.dumps(item)
    return len(body).to_bytes(4, "big") + body


def _raw(hexbody: str) -> bytes:
    body = bytes.fromhex(hexbody)
    return len(body).to_bytes(4, "big") + body


HELLO_F = [1, "mps2-an385", "0.1.0", 1000, 2000, ["wasm-mvp"], 1024]
HB_F = [10, 20, [[1, 3]]]
# name, frame, expected code, expected message id in the error reply (0 = unknown)
BAD_FRAMES: list[tuple[str, bytes, ErrorCode, int]] = [
    ("length over max", b"\x00\x00\x04\x01" + bytes(1025), ErrorCode.FRAME_TOO_LARGE, 0),
    ("length 2^32-1", b"\xff\xff\xff\xff", ErrorCode.FRAME_TOO_LARGE, 0),
    ("empty body", b"\x00\x00\x00\x00", ErrorCode.MALFORMED_CBOR, 0),
    ("not an array", _frame(1), ErrorCode.BAD_ENVELOPE, 0),
    ("array of 2", _frame([1, 1]), ErrorCode.BAD_ENVELOPE, 0),
    ("array of 4", _frame([1, 1, [6, 0], 0]), ErrorCode.BAD_ENVELOPE, 0),
    ("version text", _frame(["1", 1, [6, 0]]), ErrorCode.BAD_ENVELOPE, 0),
    ("version 2", _frame([2, 77, [6, 0]]), ErrorCode.UNSUPPORTED_VERSION, 77),
    ("version 0", _frame([0, 78, [6, 0]]), ErrorCode.UNSUPPORTED_VERSION, 78),
    ("id 2^32", _frame([1, 2**32, [6, 0]]), ErrorCode.BAD_ENVELOPE, 0),
    ("id negative", _frame([1, -1, [6, 0]]), ErrorCode.BAD_ENVELOPE, 0),
    ("id bool", _frame([1, True, [6, 0]]), ErrorCode.BAD_ENVELOPE, 0),
    ("message not array", _frame([1, 5, 6]), ErrorCode.BAD_ENVELOPE, 5),
    ("message empty", _frame([1, 5, []]), ErrorCode.BAD_ENVELOPE, 5),
    ("tag text", _frame([1, 5, ["hello"]]), ErrorCode.BAD_ENVELOPE, 5),
    ("tag negative", _frame([1, 5, [-1]]), ErrorCode.BAD_ENVELOPE, 5),
    ("tag 0", _frame([1, 5, [0]]), ErrorCode.UNKNOWN_MESSAGE, 5),
    ("tag 8 reserved", _frame([1, 5, [8]]), ErrorCode.UNKNOWN_MESSAGE, 5),
    ("tag 15 reserved", _frame([1, 5, [15, b"x"]]), ErrorCode.UNKNOWN_MESSAGE, 5),
    ("tag 26 reserved", _frame([1, 5, [26, b"app"]]), ErrorCode.UNKNOWN_MESSAGE, 5),
    ("tag 99", _frame([1, 5, [99]]), ErrorCode.UNKNOWN_MESSAGE, 5),
    ("tag 2^40", _frame([1, 5, [2**40]]), ErrorCode.UNKNOWN_MESSAGE, 5),
    ("hello 6 fields", _frame([1, 3, [1, *HELLO_F[:-1]]]), ErrorCode.BAD_FIELDS, 3),
    ("hello 8 fields", _frame([1, 3, [1, *HELLO_F, 0]]), ErrorCode.BAD_FIELDS, 3),
    ("hello bool ram", _frame([1, 3, [1, *HELLO_F[:3], True, *HELLO_F[4:]]]), ErrorCode.BAD_FIELDS, 3),
    ("hello float frame size", _frame([1, 3, [1, *HELLO_F[:6], 1024.0]]), ErrorCode.UNSUPPORTED_ITEM, 0),
    ("hello negative ram", _frame([1, 3, [1, *HELLO_F[:3], -1, *HELLO_F[4:]]]), ErrorCode.BAD_FIELDS, 3),
    ("hello ram 2^32", _frame([1, 3, [1, *HELLO_F[:3], 2**32, *HELLO_F[4:]]]), ErrorCode.BAD_FIELDS, 3),
    ("hello board bytes", _frame([1, 3, [1, 1, b"mps2", *HELLO_F[2:]]]), ErrorCode.BAD_FIELDS, 3),
    ("hello board empty", _frame([1, 3, [1, 1, "", *HELLO_F[2:]]]), ErrorCode.BAD_FIELDS, 3),
    ("hello board 33", _frame([1, 3, [1, 1, "b" * 33, *HELLO_F[2:]]]), ErrorCode.BAD_FIELDS, 3),
    ("hello 17 features", _frame([1, 3, [1, *HELLO_F[:5], ["f"] * 17, 1024]]), ErrorCode.BAD_FIELDS, 3),
    ("hello feature int", _frame([1, 3, [1, *HELLO_F[:5], [1], 1024]]), ErrorCode.BAD_FIELDS, 3),
    ("hello features map", _frame([1, 3, [1, *HELLO_F[:5], {}, 1024]]), ErrorCode.BAD_FIELDS, 3),
    ("hello frame 1023", _frame([1, 3, [1, *HELLO_F[:6], 1023]]), ErrorCode.BAD_FIELDS, 3),
    ("hello version 0", _frame([1, 3, [1, 0, *HELLO_F[1:]]]), ErrorCode.BAD_FIELDS, 3),
    (
        "hello bad utf-8",
        # [1, 3, [1, 1, <text c3 28>, "0.1.0", 1000, 2000, ["x"], 1024]]
        _raw("830103880101" + "62c328" + "65302e312e30" + "1903e8" + "1907d0" + "816178" + "190400"),
        ErrorCode.MALFORMED_CBOR,
        0,
    ),
    ("hello_ack hb 999", _frame([1, 1, [2, 1, 4096, 0, 999]]), ErrorCode.BAD_FIELDS, 1),
    ("hello_ack frame 0", _frame([1, 1, [2, 1, 0, 0, 30000]]), ErrorCode.BAD_FIELDS, 1),
    ("enroll empty csr", _frame([1, 2, [3, b"", "b", b""]]), ErrorCode.BAD_FIELDS, 2),
    ("enroll csr 601", _frame([1, 2, [3, bytes(601), "b", b""]]), ErrorCode.BAD_FIELDS, 2),
    ("enroll csr text", _frame([1, 2, [3, "csr", "b", b""]]), ErrorCode.BAD_FIELDS, 2),
    ("enroll token 33", _frame([1, 2, [3, b"c", "b", bytes(33)]]), ErrorCode.BAD_FIELDS, 2),
    ("enroll token text", _frame([1, 2, [3, b"c", "b", "tok"]]), ErrorCode.BAD_FIELDS, 2),
    ("enroll token null", _frame([1, 2, [3, b"c", "b", None]]), ErrorCode.BAD_FIELDS, 2),
    ("enroll v1.0 2 fields", _frame([1, 2, [3, b"c", "b"]]), ErrorCode.BAD_FIELDS, 2),
    ("result status 3", _frame([1, 2, [4, 3, "", b"", b"", ""]]), ErrorCode.BAD_FIELDS, 2),
    ("result uuid 15", _frame([1, 2, [4, 0, "dev", bytes(15), b"c", ""]]), ErrorCode.BAD_FIELDS, 2),
    ("result accepted no name", _frame([1, 2, [4, 0, "", UUID, b"c", ""]]), ErrorCode.BAD_FIELDS, 2),
    ("result accepted no cert", _frame([1, 2, [4, 0, "dev", UUID, b"", ""]]), ErrorCode.BAD_FIELDS, 2),
    ("result pending with name", _frame([1, 2, [4, 1, "dev", b"", b"", ""]]), ErrorCode.BAD_FIELDS, 2),
    ("result pending with cert", _frame([1, 2, [4, 1, "", b"", b"c", ""]]), ErrorCode.BAD_FIELDS, 2),
    ("result reason 129", _frame([1, 2, [4, 2, "", b"", b"", "x" * 129]]), ErrorCode.BAD_FIELDS, 2),
    ("result reason bytes", _frame([1, 2, [4, 2, "", b"", b"", b"x"]]), ErrorCode.BAD_FIELDS, 2),
    ("result v1.0 3 fields", _frame([1, 2, [4, 1, "", b""]]), ErrorCode.BAD_FIELDS, 2),
    ("heartbeat entry short", _frame([1, 4, [5, 1, 2, [[1]]]]), ErrorCode.BAD_FIELDS, 4),
    ("heartbeat entry int", _frame([1, 4, [5, 1, 2, [1]]]), ErrorCode.BAD_FIELDS, 4),
    ("heartbeat 17 apps", _frame([1, 4, [5, 1, 2, [[1, 2]] * 17]]), ErrorCode.BAD_FIELDS, 4),
    ("heartbeat state 256", _frame([1, 4, [5, 1, 2, [[1, 256]]]]), ErrorCode.BAD_FIELDS, 4),
    ("heartbeat uptime 2^64 bignum", _frame([1, 4, [5, 2**64, 2, []]]), ErrorCode.UNSUPPORTED_ITEM, 0),
    ("heartbeat free bool", _frame([1, 4, [5, 1, False, []]]), ErrorCode.BAD_FIELDS, 4),
    ("heartbeat extras too deep", _frame([1, 4, [5, 1, 2, [[1, 2, [[[[[0]]]]]]]]]), ErrorCode.TOO_DEEP, 0),
    ("error code 0", _frame([1, 4, [7, 0, "x"]]), ErrorCode.BAD_FIELDS, 4),
    ("error code 65536", _frame([1, 4, [7, 65536, "x"]]), ErrorCode.BAD_FIELDS, 4),
    ("error text 129", _frame([1, 4, [7, 2, "x" * 129]]), ErrorCode.BAD_FIELDS, 4),
    ("envelope indefinite", _raw("9f0101820600ff"), ErrorCode.INDEFINITE_LENGTH, 0),
    ("message indefinite", _raw("8301019f0600ff"), ErrorCode.INDEFINITE_LENGTH, 0),
    ("trailing after envelope", _raw("830101820600" + "00"), ErrorCode.TRAILING_BYTES, 0),
    ("array map key in message", _raw("830104850501028183010203a18000"), ErrorCode.UNSUPPORTED_ITEM, 0),
]


@pytest.mark.parametrize(("frame", "code", "msg_id"), [b[1:] for b in BAD_FRAMES], ids=[b[0] for b in BAD_FRAMES])
def test_bad_frames_rejected_by_both(build: dict[str, Path], frame: bytes, code: ErrorCode, msg_id: int) -> None:
    assert run_tool(build, "proto", stdin=frame.hex()) == f"ERR {int(code)} {msg_id}"
    with pytest.raises(ProtocolError) as exc:
        decode_frame(frame)
    assert exc.value.code == code
    assert (exc.value.message_id or 0) == msg_id
    # The reply a peer sends for it is itself a valid frame.
    reply = encode_frame(Envelope(msg_id, ErrorMessage.from_exception(exc.value)))
    assert decode_frame(reply).message == ErrorMessage(int(code), exc.value.text[:128])


def test_heartbeat_extension_items_are_ignored_by_both(build: dict[str, Path]) -> None:
    frame = _frame([1, 4, [5, 10, 20, [[1, 3, "later", {"k": [1, 2]}, -7], [2, 200]]]])
    expected = Envelope(4, Heartbeat(10, 20, (AppState(1, 3), AppState(2, 200))))
    out = run_tool(build, "proto", stdin=frame.hex()).splitlines()
    assert json.loads(out[0]) == json_form(expected.to_item())
    assert out[1] == f"RE {encode_frame(expected).hex()}"
    assert decode_frame(frame) == expected


def test_frame_size_boundary(build: dict[str, Path]) -> None:
    # A body of exactly max_frame bytes is accepted; one more byte is refused, by both.
    env = Envelope(1, EnrollRequest(bytes(600), "b" * 32, bytes(32)))
    frame = encode_frame(env)
    n = len(frame) - 4
    assert run_tool(build, "proto", str(n), stdin=frame.hex()).startswith("[1,1,[3,")
    assert run_tool(build, "proto", str(n - 1), stdin=frame.hex()) == f"ERR {int(ErrorCode.FRAME_TOO_LARGE)} 0"
    assert decode_frame(frame, n) == env
    with pytest.raises(ProtocolError) as exc:
        decode_frame(frame, n - 1)
    assert exc.value.code == ErrorCode.FRAME_TOO_LARGE


def test_certificate_limit_by_both(build: dict[str, Path]) -> None:
    # 1025 certificate bytes do not fit the initial frame size, so check them under a large agreed size.
    for n, ok in ((1024, True), (1025, False)):
        frame = _frame([1, 2, [4, 0, "dev", UUID, bytes(n), ""]])
        out = run_tool(build, "proto", str(2**20), stdin=frame.hex())
        if ok:
            assert out.startswith("[1,2,[4,0,")
            assert decode_frame(frame, 2**20).message == EnrollResult(0, "dev", UUID, bytes(n))
        else:
            assert out == f"ERR {int(ErrorCode.BAD_FIELDS)} 2"
            with pytest.raises(ProtocolError) as exc:
                decode_frame(frame, 2**20)
            assert exc.value.code == ErrorCode.BAD_FIELDS


def test_c_unit_program(build: dict[str, Path]) -> None:
    res = subprocess.run([str(build["unit"])], capture_output=True, text=True, env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("ok ") and int(res.stdout.split()[1]) >= 90
    assert "runtime error" not in res.stderr
