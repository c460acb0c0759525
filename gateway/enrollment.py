"""Enrollment building blocks: CSR checks, device naming, one-time enrollment tokens.

Kept apart from the TLS listener (link.py) so the rules can be tested without sockets and reused by
front ends (the console issues tokens and shows pending keys).

Tokens: 16 random bytes handed to the operator (hex) and provisioned into one device; the store keeps
only ``sha256(token)`` as an :class:`~wasmbed.gateway.model.EnrollmentToken` named after the hash, so a
leaked database does not leak usable tokens, and lookup is by name (no scan, no timing leak on the
secret). A token is single use (marked used, kept for audit), expires, and may be bound to a board name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .model import Device, EnrollmentToken, EnrollmentTokenSpec, ObjectMeta, utcnow, validate_name
from .pki import fingerprint
from .protocol import DEVICE_NAME_MAX, TOKEN_MAX
from .store import Store

TOKEN_BYTES = 16
DEFAULT_TOKEN_TTL = dt.timedelta(hours=24)


class EnrollmentError(Exception):
    """Input that cannot lead to an enrollment (bad CSR, bad token); the text is sent as the reason."""


@dataclass(frozen=True)
class CheckedCSR:
    """A CSR whose self-signature verified: the device holds the private key of ``spki_der``."""

    der: bytes
    spki_der: bytes
    fingerprint: str


def check_csr(csr_der: bytes) -> CheckedCSR:
    """Parse a DER PKCS#10 request; require a P-256 key and a valid signature (proof of possession)."""
    try:
        csr = x509.load_der_x509_csr(csr_der)
    except ValueError as exc:
        raise EnrollmentError(f"malformed CSR: {exc}") from exc
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise EnrollmentError("CSR key is not ECDSA P-256")
    try:
        valid = csr.is_signature_valid
    except Exception as exc:  # cryptography raises various errors for odd signature algorithms
        raise EnrollmentError(f"CSR signature unusable: {exc}") from exc
    if not valid:
        raise EnrollmentError("CSR signature invalid")
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return CheckedCSR(csr_der, spki, fingerprint(spki))


_SLUG_BAD = re.compile(r"[^a-z0-9-]+")


def device_name_for(board: str, fp: str, hex_digits: int = 8) -> str:
    """``<board>-<first hex digits of the key fingerprint>``, a valid name of at most 63 chars.

    Deterministic, so the same key on the same board always gets the same name (a device polling while
    pending, or re-enrolling after losing its certificate, finds its record without a scan).
    """
    suffix = fp.replace(":", "")[:hex_digits]
    slug = _SLUG_BAD.sub("-", board.lower()).strip("-")[: DEVICE_NAME_MAX - len(suffix) - 1].strip("-")
    name = f"{slug}-{suffix}" if slug else f"device-{suffix}"
    return validate_name(name)


def find_device_by_fingerprint(store: Store, fp: str, hint: str | None = None) -> Device | None:
    """The Device with this key: try the name ``hint`` first (O(1)), then scan (rare paths only)."""
    if hint is not None:
        dev = store.get(Device, hint)
        if dev is not None and dev.spec.public_key_fingerprint == fp:
            return dev
    for dev in store.list(Device):
        if dev.spec.public_key_fingerprint == fp:
            return dev
    return None


def free_device_name(store: Store, board: str, fp: str) -> str:
    """A name for a new device; longer fingerprint prefixes on the (unlikely) prefix collision."""
    for digits in (8, 12, 16, 24, 32):
        name = device_name_for(board, fp, digits)
        if store.get(Device, name) is None:
            return name
    raise EnrollmentError("no free device name")


# --------------------------------------------------------------------------------------------------
# one-time tokens


def token_hash(token: bytes) -> str:
    return hashlib.sha256(token).hexdigest()


def token_resource_name(digest: str) -> str:
    return f"token-{digest[:32]}"


class TokenRegistry:
    """Issue and redeem one-time enrollment tokens (persisted hashed in the store)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def issue(self, board: str | None = None, *, ttl: dt.timedelta = DEFAULT_TOKEN_TTL,
              issued_by: str | None = None, labels: dict[str, str] | None = None) -> bytes:
        """A fresh token (the only time its value exists outside the device). ``labels`` are put on
        the Device that redeems it (the lab uses this to tie a device to the board it runs on)."""
        if ttl <= dt.timedelta(0):
            raise ValueError("token ttl must be positive")
        token = secrets.token_bytes(TOKEN_BYTES)
        digest = token_hash(token)
        spec = EnrollmentTokenSpec(token_sha256=digest, expires=utcnow() + ttl, board=board, issued_by=issued_by,
                                   labels=dict(labels or {}))
        self._store.create(EnrollmentToken(metadata=ObjectMeta(name=token_resource_name(digest)), spec=spec))
        return token

    def redeem(self, token: bytes, board: str, used_by: str) -> EnrollmentToken:
        """Check and use up a token; raises EnrollmentError with the reason it cannot be used."""
        if not 1 <= len(token) <= TOKEN_MAX:
            raise EnrollmentError("enrollment token has a bad length")
        digest = token_hash(token)
        tok = self._store.get(EnrollmentToken, token_resource_name(digest))
        if tok is None or not secrets.compare_digest(tok.spec.token_sha256, digest):
            raise EnrollmentError("unknown enrollment token")
        if tok.status.used is not None:
            raise EnrollmentError("enrollment token already used")
        if tok.spec.expires <= utcnow():
            raise EnrollmentError("enrollment token expired")
        if tok.spec.board is not None and tok.spec.board != board:
            raise EnrollmentError(f"enrollment token is for board {tok.spec.board}, not {board}")
        tok.status.used = utcnow()
        tok.status.used_by = used_by
        return self._store.update(tok)

    def list(self) -> list[EnrollmentToken]:
        return self._store.list(EnrollmentToken)

    def purge_expired(self, keep_used_for: dt.timedelta = dt.timedelta(days=30)) -> int:
        """Delete expired unused tokens and used ones older than ``keep_used_for``; returns how many."""
        now = utcnow()
        n = 0
        for tok in self._store.list(EnrollmentToken):
            used = tok.status.used
            if (used is None and tok.spec.expires <= now) or (used is not None and now - used > keep_used_for):
                self._store.delete(EnrollmentToken, tok.name)
                n += 1
        return n


__all__ = [
    "DEFAULT_TOKEN_TTL",
    "CheckedCSR",
    "EnrollmentError",
    "TokenRegistry",
    "check_csr",
    "device_name_for",
    "find_device_by_fingerprint",
    "free_device_name",
    "token_hash",
]
