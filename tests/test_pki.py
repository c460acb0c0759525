"""PKI: file modes, certificate contents, and real TLS handshakes (Python ssl on both ends)."""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import ssl
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wasmbed.gateway import pki
from wasmbed.gateway.model import spki_fingerprint

FP_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){31}$")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> pki.GatewayPKI:
    return pki.load_or_create(tmp_path_factory.mktemp("gw") / "pki", server_names=["gw.example", "10.0.2.2"])


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> pki.GatewayPKI:
    """A second installation: its CA must not be trusted by the first."""
    return pki.load_or_create(tmp_path_factory.mktemp("other") / "pki")


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _spki(k: ec.EllipticCurvePrivateKey) -> bytes:
    return pki.spki_der_of(k.public_key())


def _csr(key: ec.EllipticCurvePrivateKey | object, cn: str = "board-7") -> bytes:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))  # type: ignore[arg-type]
    return csr.public_bytes(serialization.Encoding.DER)


def _self_signed(key: ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "selfie")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


# --------------------------------------------------------------------------------------------------
# files and modes


def test_files_and_modes(tmp_path: Path) -> None:
    d = tmp_path / "data" / "pki"
    p = pki.load_or_create(d)
    assert _mode(d) == 0o700
    assert _mode(d / "ca.key") == 0o600
    assert _mode(d / "server.key") == 0o600
    assert _mode(d / "ca.crt") == 0o644
    assert p.server_key_path == d / "server.key"
    assert not list(d.glob(".*.tmp")), "temporary files left behind"


def test_key_mode_is_0600_even_with_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        pki.load_or_create(tmp_path / "pki")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "pki" / "ca.key") == 0o600
    assert _mode(tmp_path / "pki" / "server.key") == 0o600
    assert _mode(tmp_path / "pki") == 0o700


def test_idempotent(tmp_path: Path) -> None:
    a = pki.load_or_create(tmp_path / "pki")
    files = {f.name: f.read_bytes() for f in (tmp_path / "pki").iterdir()}
    b = pki.load_or_create(tmp_path / "pki")
    assert a.ca_cert == b.ca_cert
    assert a.server_cert == b.server_cert
    assert files == {f.name: f.read_bytes() for f in (tmp_path / "pki").iterdir()}


def test_server_cert_reissued_when_names_change_ca_kept(tmp_path: Path) -> None:
    a = pki.load_or_create(tmp_path / "pki")
    b = pki.load_or_create(tmp_path / "pki", server_names=["gw.lab"])
    assert a.ca_cert == b.ca_cert
    assert a.server_cert != b.server_cert
    assert _spki(a.server_key) == _spki(b.server_key)  # same key, new certificate
    san = b.server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "gw.lab" in san.get_values_for_type(x509.DNSName)


def test_server_cert_renewed_near_expiry(tmp_path: Path) -> None:
    a = pki.load_or_create(tmp_path / "pki")
    later = dt.datetime.now(dt.UTC) + pki.SERVER_VALIDITY - dt.timedelta(days=10)
    b = pki.load_or_create(tmp_path / "pki", now=later)
    assert a.ca_cert == b.ca_cert
    assert b.server_cert.not_valid_after_utc > a.server_cert.not_valid_after_utc


def test_refuses_world_readable_key(tmp_path: Path) -> None:
    pki.load_or_create(tmp_path / "pki")
    key = tmp_path / "pki" / "server.key"
    data = key.read_bytes()
    key.unlink()
    fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, data)
    os.close(fd)
    os.chmod(key, 0o644)  # the test deliberately creates the insecure state
    with pytest.raises(pki.InsecurePermissions, match="0644"):
        pki.load_or_create(tmp_path / "pki")


def test_refuses_shared_directory(tmp_path: Path) -> None:
    d = tmp_path / "shared"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    with pytest.raises(pki.InsecurePermissions):
        pki.load_or_create(d)
    assert not (d / "ca.key").exists()


def test_refuses_relative_path() -> None:
    with pytest.raises(pki.PKIError, match="absolute"):
        pki.load_or_create(Path("relative/pki"))


def test_refuses_half_present_ca(tmp_path: Path) -> None:
    pki.load_or_create(tmp_path / "pki")
    (tmp_path / "pki" / "ca.crt").unlink()
    with pytest.raises(pki.PKIError, match="refusing"):
        pki.load_or_create(tmp_path / "pki")
    assert (tmp_path / "pki" / "ca.key").exists()


# --------------------------------------------------------------------------------------------------
# certificate contents


def test_ca_certificate(gw: pki.GatewayPKI) -> None:
    ca = gw.ca_cert
    assert ca.issuer == ca.subject
    ca.verify_directly_issued_by(ca)
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(ca.public_key().curve, ec.SECP256R1)  # type: ignore[union-attr]
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    assert ca.not_valid_after_utc - ca.not_valid_before_utc > dt.timedelta(days=10 * 365)
    assert isinstance(ca.signature_hash_algorithm, hashes.SHA256)


def test_server_certificate(gw: pki.GatewayPKI) -> None:
    cert = gw.server_cert
    cert.verify_directly_issued_by(gw.ca_cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "gw.example"}
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.0.2.2"}
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(cert.public_key().curve, ec.SECP256R1)  # type: ignore[union-attr]


def test_sign_device_csr(gw: pki.GatewayPKI) -> None:
    key = _key()
    der = gw.sign_device_csr(_csr(key, "board-7"))
    cert = x509.load_der_x509_certificate(der)
    cert.verify_directly_issued_by(gw.ca_cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "board-7"
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert pki.certificate_fingerprint(der) == pki.fingerprint(_spki(key))
    # the gateway may override the name the device asked for
    der2 = gw.sign_device_csr(_csr(key, "whatever"), "dev-0001")
    assert gw.verify_device_certificate(der2).device_name == "dev-0001"


def test_sign_device_csr_rejects_bad_input(gw: pki.GatewayPKI) -> None:
    good = bytearray(_csr(_key()))
    good[-5] ^= 0xFF  # corrupt the signature
    with pytest.raises(pki.PKIError, match="signature"):
        gw.sign_device_csr(bytes(good))
    with pytest.raises(pki.PKIError, match="P-256"):
        gw.sign_device_csr(_csr(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(pki.PKIError, match="invalid name"):
        gw.sign_device_csr(_csr(_key(), "Not A Name"))
    with pytest.raises(pki.PKIError, match="malformed"):
        gw.sign_device_csr(b"\x30\x03junk")


def test_issue_device_certificate_from_spki(gw: pki.GatewayPKI) -> None:
    key = _key()
    der = gw.issue_device_certificate(_spki(key), "mps2-an385-0")
    peer = gw.verify_device_certificate(der)
    assert peer.device_name == "mps2-an385-0"
    assert peer.spki_der == _spki(key)
    assert peer.fingerprint == pki.fingerprint(_spki(key))


def test_verify_device_certificate_rejects_foreign_and_server(gw: pki.GatewayPKI,
                                                              other: pki.GatewayPKI) -> None:
    foreign = other.issue_device_certificate(_spki(_key()), "dev-x")
    with pytest.raises(pki.PKIError, match="not issued"):
        gw.verify_device_certificate(foreign)
    server_der = gw.server_cert.public_bytes(serialization.Encoding.DER)
    with pytest.raises(pki.PKIError, match="clientAuth"):
        gw.verify_device_certificate(server_der)
    later = dt.datetime.now(dt.UTC) + pki.DEVICE_VALIDITY + dt.timedelta(days=1)
    with pytest.raises(pki.PKIError, match="validity"):
        gw.verify_device_certificate(gw.issue_device_certificate(_spki(_key()), "dev-y"), now=later)


def test_fingerprint_single_encoding() -> None:
    spki = _spki(_key())
    fp = pki.fingerprint(spki)
    assert FP_RE.match(fp)
    assert fp == spki_fingerprint(spki)  # model and pki agree
    assert pki.normalize_fingerprint(fp.upper().replace(":", "")) == fp
    assert pki.normalize_fingerprint(f"  {fp.upper()} ") == fp
    with pytest.raises(ValueError):
        pki.normalize_fingerprint("q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=")  # base64 is not accepted


# --------------------------------------------------------------------------------------------------
# real handshakes over a socketpair


@dataclass
class Result:
    server_error: BaseException | None = None
    client_error: BaseException | None = None
    peer: pki.PeerCertificate | None = None
    version: str | None = None
    cipher: str | None = None
    echoed: bytes = b""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.server_error is None and self.client_error is None and self.echoed == b"ping"


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str = "localhost") -> Result:
    """Full handshake plus one echoed message (TLS 1.3 reports client-cert failures only on read)."""
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    res = Result()

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                res.peer = pki.peer_certificate(s)
                res.version = s.version()
                res.cipher = s.cipher()[0]  # type: ignore[index]
                s.sendall(s.recv(4))
        except (OSError, pki.PKIError) as e:
            res.server_error = e
            a.close()

    t = threading.Thread(target=serve)
    t.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=hostname) as c:
            c.sendall(b"ping")
            res.echoed = c.recv(4)
    except OSError as e:
        res.client_error = e
        b.close()
    t.join(10)
    assert not t.is_alive()
    return res


def _device_ctx(gw: pki.GatewayPKI, tmp_path: Path, cert_der: bytes | None = None,
                key: ec.EllipticCurvePrivateKey | None = None) -> ssl.SSLContext:
    return gw.client_context(cert_der, key, scratch_dir=tmp_path / "dev" if cert_der else None)


def test_handshake_accepts_our_device_certificate(gw: pki.GatewayPKI, tmp_path: Path) -> None:
    key = _key()
    cert = gw.sign_device_csr(_csr(key), "board-7")
    r = handshake(gw.server_context(allow_enrollment=False), _device_ctx(gw, tmp_path, cert, key))
    assert r.ok, (r.server_error, r.client_error)
    assert r.version == "TLSv1.3"
    assert r.peer is not None
    assert r.peer.fingerprint == pki.fingerprint(_spki(key))
    assert r.peer.device_name == "board-7"
    assert _mode(tmp_path / "dev" / "client.key") == 0o600


def test_handshake_tls12_uses_mbedtls_suite(gw: pki.GatewayPKI, tmp_path: Path) -> None:
    key = _key()
    ctx = _device_ctx(gw, tmp_path, gw.issue_device_certificate(_spki(key), "dev-12"), key)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    r = handshake(gw.server_context(), ctx)
    assert r.ok, (r.server_error, r.client_error)
    assert r.version == "TLSv1.2"
    assert r.cipher == "ECDHE-ECDSA-AES128-GCM-SHA256"
    assert r.peer is not None and r.peer.device_name == "dev-12"


def test_handshake_rejects_certificate_from_other_ca(gw: pki.GatewayPKI, other: pki.GatewayPKI,
                                                     tmp_path: Path) -> None:
    key = _key()
    foreign = other.issue_device_certificate(_spki(key), "intruder")
    for allow in (False, True):
        r = handshake(gw.server_context(allow_enrollment=allow), _device_ctx(gw, tmp_path, foreign, key))
        assert isinstance(r.server_error, ssl.SSLCertVerificationError), r
        assert r.peer is None and r.echoed == b""


def test_handshake_rejects_self_signed_even_when_optional(gw: pki.GatewayPKI, tmp_path: Path) -> None:
    """Why the design is 'no cert for enrollment' and not 'self-signed for enrollment'.

    CERT_OPTIONAL requests a certificate, but Python's ssl (no verify callback) aborts on one that does
    not chain to a trusted CA, so accepting self-signed certificates would need our own verification
    which the stdlib cannot hook in.
    """
    key = _key()
    r = handshake(gw.server_context(allow_enrollment=True), _device_ctx(gw, tmp_path, _self_signed(key), key))
    assert isinstance(r.server_error, ssl.SSLCertVerificationError)
    assert "self-signed" in str(r.server_error)


def test_enrollment_session_without_certificate(gw: pki.GatewayPKI, tmp_path: Path) -> None:
    r = handshake(gw.server_context(allow_enrollment=True), _device_ctx(gw, tmp_path))
    assert r.ok, (r.server_error, r.client_error)
    assert r.peer is None  # unauthenticated: enrollment messages only
    strict = handshake(gw.server_context(allow_enrollment=False), _device_ctx(gw, tmp_path))
    assert isinstance(strict.server_error, ssl.SSLError)
    assert strict.echoed == b""


def test_full_enrollment_flow(gw: pki.GatewayPKI, tmp_path: Path) -> None:
    """No-cert session -> CSR signed -> reconnect with the certificate -> identified by fingerprint."""
    key = _key()
    first = handshake(gw.server_context(), _device_ctx(gw, tmp_path))
    assert first.ok and first.peer is None
    cert = gw.sign_device_csr(_csr(key, "new-board"))
    second = handshake(gw.server_context(), _device_ctx(gw, tmp_path, cert, key))
    assert second.ok and second.peer is not None
    assert second.peer.fingerprint == spki_fingerprint(_spki(key))


def test_handshake_rejects_server_certificate_used_as_client(gw: pki.GatewayPKI, tmp_path: Path) -> None:
    """Chains to our CA but has only serverAuth EKU: OpenSSL's purpose check must refuse it."""
    server_der = gw.server_cert.public_bytes(serialization.Encoding.DER)
    r = handshake(gw.server_context(), _device_ctx(gw, tmp_path, server_der, gw.server_key))
    assert isinstance(r.server_error, ssl.SSLCertVerificationError)


def test_device_verifies_gateway_by_ip_and_rejects_foreign_gateway(gw: pki.GatewayPKI, other: pki.GatewayPKI,
                                                                   tmp_path: Path) -> None:
    assert handshake(gw.server_context(), _device_ctx(gw, tmp_path), hostname="127.0.0.1").ok
    assert handshake(gw.server_context(), _device_ctx(gw, tmp_path), hostname="gw.example").ok
    wrong_name = handshake(gw.server_context(), _device_ctx(gw, tmp_path), hostname="evil.example")
    assert isinstance(wrong_name.client_error, ssl.SSLCertVerificationError)
    foreign = handshake(other.server_context(), _device_ctx(gw, tmp_path))
    assert isinstance(foreign.client_error, ssl.SSLCertVerificationError)


def test_server_context_settings(gw: pki.GatewayPKI) -> None:
    ctx = gw.server_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    assert gw.server_context(allow_enrollment=False).verify_mode == ssl.CERT_REQUIRED
    names = {c["name"]: c["protocol"] for c in ctx.get_ciphers()}
    assert [n for n, proto in names.items() if proto == "TLSv1.2"] == ["ECDHE-ECDSA-AES128-GCM-SHA256"]
    assert pki.TLS13_PREFERRED in names
    assert ctx.num_tickets == 0


def test_peer_certificate_refuses_unverified_context() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    obj = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
    with pytest.raises(pki.PKIError):
        pki.peer_certificate(obj)
