"""Per-installation PKI: CA, gateway server certificate, device client certificates, TLS context.

Files (in the directory the caller passes -- a platformdirs data dir, never the cwd or the repo):
``ca.key``/``ca.crt``, ``server.key``/``server.crt`` (PEM). Keys are created 0600 via ``os.open`` (never
chmod-ed afterwards), the directory 0700; existing files with looser modes are refused, like ssh does.

All keys are ECDSA P-256 with SHA-256 signatures: it is what mbedTLS on a Cortex-M does cheaply and the
only curve the server offers (``prime256v1``).

Fingerprints: ``sha256(SPKI DER)`` as **lowercase colon-separated hex** (95 chars, e.g. ``3f:a0:...``),
the same string everywhere (model, store, logs, UI). No base64 form exists, so two alphabets cannot mix.

Enrollment / certificate design (decided here)
----------------------------------------------
*Every device certificate the gateway accepts chains to our CA.* The alternative -- the device presents a
self-signed certificate first and the gateway accepts it for the enrollment path -- is not possible with
Python's ``ssl`` module: there is no verify callback, and a server with ``CERT_OPTIONAL`` or
``CERT_REQUIRED`` *aborts the handshake* on any presented certificate that does not verify (the test suite
demonstrates this with a real handshake). Accepting self-signed certificates would require ``CERT_NONE``,
which does not even request a client certificate. So the flow is:

1. Enrollment session: the device has generated its P-256 key on the board but has no certificate yet.
   It connects presenting **no client certificate**; it verifies the gateway against our CA (the CA DER,
   :attr:`GatewayPKI.ca_cert_der`, is provisioned into the firmware image). The server context uses
   ``CERT_OPTIONAL``, so the handshake succeeds and :func:`peer_certificate` returns ``None``: the session
   is *unauthenticated* and the protocol layer must allow only enrollment messages on it (and only while
   pairing mode is on / the operator approves).
2. The device sends a PKCS#10 CSR (mbedTLS ``mbedtls_x509write_csr``); its self-signature proves
   possession of the key. :meth:`GatewayPKI.sign_device_csr` verifies it and issues a clientAuth
   certificate with ``CN = device name``. The device stores it in flash and acknowledges.
3. Operational sessions: the device presents that certificate. OpenSSL verifies the chain *and* the
   clientAuth purpose during the handshake; :func:`peer_certificate` then gives the SPKI fingerprint,
   which the gateway must look up in the store -- a certificate alone is not authorisation (we do not
   run CRLs; deleting the Device record is revocation).

Trade-off: with ``CERT_OPTIONAL`` the TLS layer alone no longer guarantees an authenticated peer; the
check moved into one function (:func:`peer_certificate`) that every session must call. Installations that
never enroll over the network (devices pre-provisioned via :meth:`GatewayPKI.issue_device_certificate`)
use ``server_context(allow_enrollment=False)`` = ``CERT_REQUIRED``, where the TLS layer enforces it.

Cipher suites: TLS 1.2 is limited to ``ECDHE-ECDSA-AES128-GCM-SHA256``. Python cannot restrict TLS 1.3
suites (no ``SSL_CTX_set_ciphersuites`` binding); OpenSSL's default TLS 1.3 list includes
``TLS_AES_128_GCM_SHA256``, which is what an mbedTLS 3.6 client built with only that suite offers, so
negotiation lands there (a client that also offers AES-256-GCM, like Python's, gets AES-256).
Session tickets are disabled (``num_tickets = 0``): devices reconnect with full handshakes, saving RAM.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import secrets
import ssl
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .model import spki_fingerprint, validate_name

CA_VALIDITY = dt.timedelta(days=20 * 365)
SERVER_VALIDITY = dt.timedelta(days=825)
SERVER_RENEW_BEFORE = dt.timedelta(days=30)
DEVICE_VALIDITY = dt.timedelta(days=5 * 365)
CLOCK_SKEW = dt.timedelta(minutes=5)  # backdate notBefore: boards and hosts disagree about time

TLS12_CIPHERS = "ECDHE-ECDSA-AES128-GCM-SHA256"
TLS13_PREFERRED = "TLS_AES_128_GCM_SHA256"
ECDH_CURVE = "prime256v1"
DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1")


class PKIError(Exception):
    """The PKI directory is unusable (insecure modes, half-written state) or input is unacceptable."""


class InsecurePermissions(PKIError):
    """A key file or the PKI directory is accessible to group/other or owned by someone else."""


def fingerprint(spki_der: bytes) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, lowercase colon-separated hex (the only encoding)."""
    return spki_fingerprint(spki_der)


def normalize_fingerprint(text: str) -> str:
    """Accept user-typed variants (upper case, no colons, spaces) and return the canonical form."""
    raw = text.strip().replace(":", "").replace(" ", "").lower()
    if len(raw) != 64:
        raise ValueError(f"not a SHA-256 hex fingerprint: {text!r}")
    return bytes.fromhex(raw).hex(":", 1)


def spki_der_of(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """DER SubjectPublicKeyInfo of a public key."""
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def certificate_fingerprint(cert_der: bytes) -> str:
    """Fingerprint of the *public key* inside a DER certificate (not of the certificate bytes)."""
    return fingerprint(spki_der_of(_p256_public_key(x509.load_der_x509_certificate(cert_der).public_key())))


def _p256_public_key(key: object) -> ec.EllipticCurvePublicKey:
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise PKIError("only ECDSA P-256 (secp256r1) keys are accepted")
    return key


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------------------------------
# file helpers


def _check_private(path: Path, *, directory: bool) -> None:
    st = path.stat()
    if st.st_uid != os.getuid():
        raise InsecurePermissions(f"{path} is owned by uid {st.st_uid}, not by us")
    if stat.S_IMODE(st.st_mode) & 0o077:
        kind, want = ("directory", "0700") if directory else ("key file", "0600")
        raise InsecurePermissions(f"{kind} {path} has mode {stat.S_IMODE(st.st_mode):04o}; need {want}")


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write atomically: a fresh temp file created with ``mode`` (O_EXCL), fsync, then rename over."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    _check_private(path, directory=False)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise PKIError(f"{path}: not an ECDSA P-256 key")
    return key


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise concurrent ``load_or_create`` calls (two processes must not mint two CAs)."""
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _san_entries(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in dict.fromkeys(names):  # de-duplicate, keep order
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


# --------------------------------------------------------------------------------------------------
# certificate builders


def _ski(key: ec.EllipticCurvePublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key)


def _create_ca(now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wasmbed"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"wasmbed installation CA {secrets.token_hex(4)}"),
    ])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     key_cert_sign=True, crl_sign=True, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(_ski(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf_key_usage() -> x509.KeyUsage:
    # ECDSA signs the handshake: digitalSignature only.
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                         encipher_only=False, decipher_only=False)


def _issue_leaf(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                public_key: ec.EllipticCurvePublicKey, subject: x509.Name, eku: x509.ObjectIdentifier,
                validity: dt.timedelta, now: dt.datetime,
                san: Sequence[x509.GeneralName] = ()) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + validity, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(_ski(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(_p256_public_key(ca_key.public_key())),
                       critical=False)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _server_cert_ok(cert: x509.Certificate, ca_cert: x509.Certificate, key: ec.EllipticCurvePrivateKey,
                    names: Sequence[str], now: dt.datetime) -> bool:
    """Is the stored server certificate still the one we would issue (issuer, key, names, validity)?"""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if spki_der_of(_p256_public_key(cert.public_key())) != spki_der_of(key.public_key()):
        return False
    if cert.not_valid_after_utc - now < SERVER_RENEW_BEFORE:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(san) == set(_san_entries(names))


# --------------------------------------------------------------------------------------------------
# the PKI object


@dataclass(frozen=True)
class PeerCertificate:
    """Identity of a TLS peer whose certificate chained to our CA (checked by OpenSSL in the handshake)."""

    fingerprint: str
    device_name: str
    spki_der: bytes
    cert_der: bytes


@dataclass(frozen=True)
class GatewayPKI:
    """Loaded CA + server credentials. Create with :func:`load_or_create`."""

    directory: Path
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate
    server_key: ec.EllipticCurvePrivateKey
    server_cert: x509.Certificate

    @property
    def ca_cert_path(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def server_cert_path(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key_path(self) -> Path:
        return self.directory / "server.key"

    @property
    def ca_cert_der(self) -> bytes:
        """The trust anchor to provision into firmware images."""
        return self.ca_cert.public_bytes(serialization.Encoding.DER)

    @property
    def ca_fingerprint(self) -> str:
        return fingerprint(spki_der_of(_p256_public_key(self.ca_cert.public_key())))

    def sign_device_csr(self, csr_der: bytes, device_name: str | None = None, *,
                        validity: dt.timedelta = DEVICE_VALIDITY) -> bytes:
        """Issue a client certificate for the key in a device's CSR; returns DER.

        The CSR signature is checked (proof the device holds the key). ``device_name`` overrides the
        CSR's CN (the gateway usually assigns names); either way it must be a valid resource name.
        """
        try:
            csr = x509.load_der_x509_csr(csr_der)
        except ValueError as exc:
            raise PKIError(f"malformed CSR: {exc}") from exc
        if not csr.is_signature_valid:
            raise PKIError("CSR signature invalid: device did not prove possession of the key")
        if device_name is None:
            cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            if not cns:
                raise PKIError("CSR has no CN and no device name was given")
            device_name = str(cns[0].value)
        return self._issue_device(_p256_public_key(csr.public_key()), device_name, validity)

    def issue_device_certificate(self, spki_der: bytes, device_name: str, *,
                                 validity: dt.timedelta = DEVICE_VALIDITY) -> bytes:
        """Issue a client certificate for a bare public key; returns DER.

        No proof of possession: use only for keys read over a trusted channel (operator provisioning,
        the board's serial console in the lab). Network enrollment uses :meth:`sign_device_csr`.
        """
        try:
            key = serialization.load_der_public_key(spki_der)
        except ValueError as exc:
            raise PKIError(f"malformed SubjectPublicKeyInfo: {exc}") from exc
        return self._issue_device(_p256_public_key(key), device_name, validity)

    def _issue_device(self, key: ec.EllipticCurvePublicKey, device_name: str,
                      validity: dt.timedelta) -> bytes:
        try:
            validate_name(device_name)
        except ValueError as exc:
            raise PKIError(str(exc)) from exc
        if len(device_name) > 64:  # X.520 ub-common-name
            raise PKIError("device name longer than 64 characters cannot be a certificate CN")
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wasmbed"),
                             x509.NameAttribute(NameOID.COMMON_NAME, device_name)])
        cert = _issue_leaf(self.ca_key, self.ca_cert, key, subject, ExtendedKeyUsageOID.CLIENT_AUTH, validity,
                           _now())
        return cert.public_bytes(serialization.Encoding.DER)

    def verify_device_certificate(self, cert_der: bytes, *,
                                  now: dt.datetime | None = None) -> PeerCertificate:
        """Offline check that a device certificate was issued by our CA, is current and is for clientAuth.

        The TLS handshake already does this; this is for certificates arriving out of band.
        """
        cert = x509.load_der_x509_certificate(cert_der)
        try:
            cert.verify_directly_issued_by(self.ca_cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise PKIError(f"certificate not issued by this installation's CA: {exc}") from exc
        now = now or _now()
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise PKIError("certificate outside its validity period")
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound as exc:
            raise PKIError("certificate has no extendedKeyUsage") from exc
        if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
            raise PKIError("certificate is not for clientAuth")
        return _peer_from_cert(cert, cert_der)

    def server_context(self, *, allow_enrollment: bool = True) -> ssl.SSLContext:
        """TLS server context for device connections (see module docstring for the enrollment design).

        ``allow_enrollment=True``: ``CERT_OPTIONAL`` -- a certificate is requested; if presented it must
        chain to our CA (else the handshake fails); if absent the session is enrollment-only, and the
        caller must check :func:`peer_certificate`. ``False``: ``CERT_REQUIRED``.
        """
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
        ctx.load_cert_chain(self.server_cert_path, self.server_key_path)
        ctx.load_verify_locations(cadata=self.ca_cert_der)
        ctx.verify_mode = ssl.CERT_OPTIONAL if allow_enrollment else ssl.CERT_REQUIRED
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        ctx.set_ecdh_curve(ECDH_CURVE)
        ctx.set_ciphers(TLS12_CIPHERS)
        ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
        ctx.num_tickets = 0
        return ctx

    def client_context(self, cert_der: bytes | None = None, key: ec.EllipticCurvePrivateKey | None = None,
                       *, scratch_dir: Path | None = None) -> ssl.SSLContext:
        """A Python-side *device* context (tests, the host-side simulator): trusts our CA only.

        Python's ``ssl`` loads client credentials only from files, so with ``cert_der`` + ``key`` a
        ``scratch_dir`` (private, caller-owned) is required to hold them.
        """
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_verify_locations(cadata=self.ca_cert_der)
        ctx.set_ecdh_curve(ECDH_CURVE)
        if cert_der is not None:
            if key is None or scratch_dir is None:
                raise ValueError("cert_der needs key and scratch_dir")
            write_client_credentials(scratch_dir, cert_der, key)
            ctx.load_cert_chain(scratch_dir / "client.crt", scratch_dir / "client.key")
        return ctx


def write_client_credentials(directory: Path, cert_der: bytes, key: ec.EllipticCurvePrivateKey) -> None:
    """Write ``client.crt``/``client.key`` (key 0600) for a Python TLS client."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = x509.load_der_x509_certificate(cert_der).public_bytes(serialization.Encoding.PEM)
    _write_file(directory / "client.key", _key_pem(key), 0o600)
    _write_file(directory / "client.crt", pem, 0o644)


def _peer_from_cert(cert: x509.Certificate, cert_der: bytes) -> PeerCertificate:
    spki = spki_der_of(_p256_public_key(cert.public_key()))
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return PeerCertificate(fingerprint=fingerprint(spki), device_name=str(cns[0].value) if cns else "",
                           spki_der=spki, cert_der=cert_der)


def peer_certificate(tls: ssl.SSLObject | ssl.SSLSocket) -> PeerCertificate | None:
    """Identity of the peer after the handshake, or ``None`` for an enrollment-only session.

    Under our server contexts a presented certificate has already been verified against our CA and the
    clientAuth purpose by OpenSSL (a failure aborts the handshake), so only presence is checked here.
    The caller must still look the fingerprint up in the store.
    """
    if tls.context.verify_mode == ssl.CERT_NONE:
        raise PKIError("peer_certificate() on a context that does not verify peers")
    der = tls.getpeercert(binary_form=True)
    if not der:
        return None
    return _peer_from_cert(x509.load_der_x509_certificate(der), der)


def load_or_create(directory: Path | str, *, server_names: Sequence[str] = (),
                   now: dt.datetime | None = None) -> GatewayPKI:
    """Load the installation's PKI from ``directory``, creating what is missing. Idempotent.

    * No CA yet: create CA and server credentials.
    * CA present: never replaced (that would orphan every enrolled device); a half-present CA
      (key without cert or vice versa) is an error to be fixed by a human.
    * Server certificate re-issued (same key) when missing, not from this CA, expiring within 30 days,
      or when the SAN set (localhost, 127.0.0.1 + ``server_names``) changed.
    """
    directory = Path(directory)
    if not directory.is_absolute():
        raise PKIError(f"PKI directory must be an absolute path, got {directory}")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # mode applies to the leaf only
    _check_private(directory, directory=True)
    now = now or _now()
    names = [*DEFAULT_SERVER_NAMES, *server_names]
    ca_key_p, ca_crt_p = directory / "ca.key", directory / "ca.crt"
    srv_key_p, srv_crt_p = directory / "server.key", directory / "server.crt"
    with _locked(directory):
        if ca_key_p.exists() != ca_crt_p.exists():
            raise PKIError(f"{directory}: only one of ca.key / ca.crt exists; refusing to guess")
        if ca_key_p.exists():
            ca_key = _load_key(ca_key_p)
            ca_cert = x509.load_pem_x509_certificate(ca_crt_p.read_bytes())
            if spki_der_of(_p256_public_key(ca_cert.public_key())) != spki_der_of(ca_key.public_key()):
                raise PKIError(f"{directory}: ca.crt does not match ca.key")
        else:
            ca_key, ca_cert = _create_ca(now)
            _write_file(ca_key_p, _key_pem(ca_key), 0o600)
            _write_file(ca_crt_p, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
        if srv_key_p.exists():
            server_key = _load_key(srv_key_p)
        else:
            server_key = ec.generate_private_key(ec.SECP256R1())
            _write_file(srv_key_p, _key_pem(server_key), 0o600)
        server_cert: x509.Certificate | None = None
        if srv_crt_p.exists():
            server_cert = x509.load_pem_x509_certificate(srv_crt_p.read_bytes())
            if not _server_cert_ok(server_cert, ca_cert, server_key, names, now):
                server_cert = None
        if server_cert is None:
            subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wasmbed"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, "wasmbed gateway")])
            server_cert = _issue_leaf(ca_key, ca_cert, server_key.public_key(), subject,
                                      ExtendedKeyUsageOID.SERVER_AUTH, SERVER_VALIDITY, now,
                                      san=_san_entries(names))
            _write_file(srv_crt_p, server_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return GatewayPKI(directory=directory, ca_key=ca_key, ca_cert=ca_cert, server_key=server_key,
                      server_cert=server_cert)
