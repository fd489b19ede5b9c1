"""A per-installation, Intel-SGX-shaped PKI for the simulated enclave.

Shape: root CA -> "SIMULATED PCK Platform CA" -> one PCK leaf per emulated TCB
level (carrying Intel's SGX extension), and root CA -> "SIMULATED TCB Signing"
(signs TCB Info and QE Identity). Plus a per-PKI attestation key that plays the
Quoting Enclave's ECDSA key. This is exactly what dcap-qvl needs to verify a
quote with ``verify_with_root_ca``, and nothing more.

The keys live in a directory outside the package and outside git (default
``<jupyter data dir>/ppml/simulated-pki``), created 0700 with key files 0600.
Nothing here is confidential in any meaningful sense: a quote that verifies
against this root proves only that *this installation's* simulator made it.
Private keys never leave this module: callers get signing methods, not keys.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from ppml_kernel.tee.base import AttesterError
from ppml_kernel.tee.simulated import tcb
from ppml_kernel.tee.simulated.extension import SGX_EXTENSION_OID, sgx_extension_value
from ppml_kernel.tee.simulated.paths import ENV_PKI_DIR as ENV_PKI_DIR  # re-exported
from ppml_kernel.tee.simulated.paths import ROOT_CERT_FILE
from ppml_kernel.tee.simulated.paths import default_pki_dir as default_pki_dir  # re-exported
from ppml_kernel.tee.simulated.paths import resolve_pki_dir as _resolve

FORMAT_VERSION = 1

ORGANIZATION = "ppml-kernel SIMULATED (not Intel)"
ROOT_CN = "ppml-kernel SIMULATED SGX Root CA"
PLATFORM_CA_CN = "SIMULATED PCK Platform CA"
PCK_LEAF_CN = "SIMULATED PCK Certificate"
TCB_SIGNING_CN = "SIMULATED TCB Signing"

CA_LIFETIME = dt.timedelta(days=20 * 365)
LEAF_LIFETIME = dt.timedelta(days=7 * 365)
CLOCK_SKEW = dt.timedelta(days=1)

_META = "pki.json"
_README = "README.txt"
_ROOT_KEY, _ROOT_CERT = "root-ca.key", ROOT_CERT_FILE
_PLATFORM_KEY, _PLATFORM_CERT = "pck-platform-ca.key", "pck-platform-ca.pem"
_TCB_KEY, _TCB_CERT = "tcb-signing.key", "tcb-signing.pem"
_ATTESTATION_KEY = "attestation.key"
_PCK_DIR = "pck"
_KNOWN_FILES = frozenset(
    {
        _META,
        _README,
        _ROOT_KEY,
        _ROOT_CERT,
        _PLATFORM_KEY,
        _PLATFORM_CERT,
        _TCB_KEY,
        _TCB_CERT,
        _ATTESTATION_KEY,
        _PCK_DIR,
    }
)
_KEY_FILES = (_ROOT_KEY, _PLATFORM_KEY, _TCB_KEY, _ATTESTATION_KEY)

_README_TEXT = """\
This directory holds the SIMULATED SGX PKI of one ppml-kernel installation.

It lets the simulated enclave produce DCAP quotes that a real verifier
(dcap-qvl) accepts when, and only when, it is told to trust root-ca.pem.
A simulated enclave protects nothing. Never add root-ca.pem to a production
trust store. The *.key files are private keys: keep them to yourself.

Manage it with: ppml-kernel sim show | ppml-kernel sim reset
"""


class SimulatedPKIError(AttesterError):
    """The simulated PKI is missing, incomplete, unsafe or cannot be written."""


def raw_ecdsa_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA P-256/SHA-256 signature as raw ``r || s`` (what quotes and collateral carry)."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ]
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def build_certificate(
    *,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    basic_constraints: x509.BasicConstraints | None,
    ca_key_usage: bool,
    serial: int | None = None,
    authority_key: ec.EllipticCurvePublicKey | None = None,
    extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
) -> x509.Certificate:
    """One ECDSA/SHA-256 certificate laid out like those of Intel's SGX PKI.

    Extensions, in this order: BasicConstraints (critical; left out when None), KeyUsage
    (critical: keyCertSign+cRLSign if ``ca_key_usage``, else digitalSignature+nonRepudiation),
    SubjectKeyIdentifier, AuthorityKeyIdentifier of ``authority_key`` (if given), then
    ``extensions`` as ``(extension, critical)`` pairs. ``serial`` defaults to a random one.
    """
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if basic_constraints is not None:
        builder = builder.add_extension(basic_constraints, critical=True)
    builder = builder.add_extension(
        x509.KeyUsage(
            digital_signature=not ca_key_usage,
            content_commitment=not ca_key_usage,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=ca_key_usage,
            crl_sign=ca_key_usage,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    ).add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    if authority_key is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_key), critical=False
        )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def build_crl(
    *,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    this_update: dt.datetime,
    next_update: dt.datetime,
    number: int,
    authority_key: ec.EllipticCurvePublicKey | None = None,
    revoked_serials: Iterable[int] = (),
) -> bytes:
    """A DER CRL (ECDSA/SHA-256) revoking ``revoked_serials`` as of ``this_update``.

    Extensions: CRLNumber ``number``, then AuthorityKeyIdentifier of ``authority_key``
    (if given).
    """
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    if authority_key is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_key), critical=False
        )
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(this_update)
            .build()
        )
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _issue(
    subject: str,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    validity: tuple[dt.datetime, dt.datetime],
    *,
    ca_path_length: int | None,
    extra: tuple[x509.ExtensionType, ...] = (),
) -> x509.Certificate:
    """A certificate of this PKI (self-signed when ``issuer`` is None); a CA iff it has a path
    length. It names its issuer's key, as Intel's certificates do (and webpki accepts)."""
    is_ca = ca_path_length is not None
    return build_certificate(
        subject=_name(subject),
        public_key=public_key,
        issuer=issuer.subject if issuer is not None else _name(subject),
        issuer_key=issuer_key,
        not_before=validity[0],
        not_after=validity[1],
        basic_constraints=x509.BasicConstraints(ca=is_ca, path_length=ca_path_length),
        ca_key_usage=is_ca,
        authority_key=issuer.public_key() if issuer is not None else public_key,  # type: ignore[arg-type]
        extensions=[(ext, False) for ext in extra],
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` 0600 from the start (O_EXCL: never reuse or follow an existing file)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _write_public(path: Path, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _check_private_mode(path: Path) -> None:
    if os.name == "nt":
        return
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise SimulatedPKIError(
            f"simulated PKI key file {path} is accessible by other users (mode {mode:04o}); "
            f"run `chmod 600 {path}` or `ppml-kernel sim reset`"
        )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SimulatedPKIError(
            f"simulated PKI at {path.parent} is incomplete: {path.name} is missing; "
            "run `ppml-kernel sim reset`"
        ) from None


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    data = _read(path)
    _check_private_mode(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SimulatedPKIError(
            f"simulated PKI file {path} is not a readable private key; run `ppml-kernel sim reset`"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SimulatedPKIError(f"simulated PKI file {path} is not a P-256 key")
    return key


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path))
    except ValueError:
        raise SimulatedPKIError(
            f"simulated PKI file {path} is not a PEM certificate; run `ppml-kernel sim reset`"
        ) from None


def _check_pair(
    path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate
) -> None:
    """The key belongs to the certificate and ``issuer`` signed it (no mixed-up files)."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if cert.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise SimulatedPKIError(f"simulated PKI file {path} does not match its private key")
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise SimulatedPKIError(
            f"simulated PKI file {path} was not issued by this PKI's CA; "
            "run `ppml-kernel sim reset`"
        ) from None


def _is_removable_pki_dir(directory: Path) -> bool:
    """Only ever delete a directory that holds nothing but what this module writes."""
    if directory.is_symlink() or not directory.is_dir():
        return False
    return all(entry.name in _KNOWN_FILES for entry in directory.iterdir())


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _cert_facts(cert: x509.Certificate, path: Path | None) -> dict[str, object]:
    facts: dict[str, object] = {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sha256_fingerprint": _fingerprint(cert),
    }
    if path is not None:
        facts["path"] = str(path)
    return facts


@dataclass(frozen=True)
class PckLeaf:
    """One emulated platform: its PCK certificate (and, privately, its key)."""

    tcb_status: str
    certificate: x509.Certificate
    pem: bytes
    _key: ec.EllipticCurvePrivateKey = field(repr=False)

    def sign(self, data: bytes) -> bytes:
        """Raw ``r || s`` signature by this PCK key (the QE report signature)."""
        return raw_ecdsa_sign(self._key, data)

    @property
    def cpu_svn(self) -> bytes:
        return tcb.tcb_level(self.tcb_status).cpu_svn

    @property
    def pce_svn(self) -> int:
        return tcb.tcb_level(self.tcb_status).pce_svn


class SimulatedPKI:
    """A loaded simulated PKI. Build with :meth:`load_or_create`, :meth:`create`, :meth:`load`."""

    def __init__(
        self,
        directory: Path,
        meta: dict[str, object],
        keys: dict[str, ec.EllipticCurvePrivateKey],
        certs: dict[str, x509.Certificate],
    ) -> None:
        self.directory = directory
        self._meta = meta
        self._root_key = keys[_ROOT_KEY]
        self._platform_key = keys[_PLATFORM_KEY]
        self._tcb_key = keys[_TCB_KEY]
        self._attestation_key = keys[_ATTESTATION_KEY]
        self.root_certificate = certs[_ROOT_CERT]
        self.platform_ca_certificate = certs[_PLATFORM_CERT]
        self.tcb_signing_certificate = certs[_TCB_CERT]
        self.root_der = self.root_certificate.public_bytes(serialization.Encoding.DER)
        self.root_pem = _cert_pem(self.root_certificate)
        self.platform_ca_pem = _cert_pem(self.platform_ca_certificate)
        self.tcb_signing_pem = _cert_pem(self.tcb_signing_certificate)
        self.root_fingerprint = hashlib.sha256(self.root_der).hexdigest()
        self.created_at = dt.datetime.fromisoformat(str(meta["created_at"]))
        self.ppid = bytes.fromhex(str(meta["ppid"]))
        self.fmspc = tcb.FMSPC
        self.pce_id = tcb.PCE_ID
        root_spki = self.root_certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # Enclave signer and QE signer are tied to this root, so a second installation
        # produces other measurements as well as another root.
        self.default_mrsigner = hashlib.sha256(b"ppml-kernel simulated signer" + root_spki).digest()
        self.qe_mrsigner = hashlib.sha256(b"ppml-kernel simulated QE signer" + root_spki).digest()
        self.qe_mrenclave = hashlib.sha256(b"ppml-kernel simulated Quoting Enclave").digest()
        self.attestation_public_key = self._attestation_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )[1:]
        self._leaves: dict[str, PckLeaf] = {}
        self._identity = self._stat_identity()

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def exists(cls, directory: str | os.PathLike[str] | None = None) -> bool:
        """Whether ``directory`` (default: :func:`default_pki_dir`) holds a simulated PKI."""
        return (_resolve(directory) / _META).is_file()

    @classmethod
    def load_or_create(cls, directory: str | os.PathLike[str] | None = None) -> SimulatedPKI:
        """Load the PKI in ``directory``, generating it first if there is none."""
        target = _resolve(directory)
        if cls.exists(target):
            return cls.load(target)
        try:
            return cls.create(target)
        except FileExistsError:
            return cls.load(target)  # another process created it first

    @classmethod
    def create(
        cls, directory: str | os.PathLike[str] | None = None, *, overwrite: bool = False
    ) -> SimulatedPKI:
        """Generate a new PKI into ``directory``.

        Raises ``FileExistsError`` if a PKI (or anything else) is already there, unless
        ``overwrite`` is true; then only a directory holding nothing but simulated-PKI
        files is deleted first. Files are written into a private temporary directory and
        renamed into place, so a crash or a concurrent creator never leaves half a PKI.
        """
        target = _resolve(directory)
        if target.exists() or target.is_symlink():
            non_empty = not target.is_dir() or any(target.iterdir())
            if non_empty and not overwrite:
                raise FileExistsError(
                    f"{target} already exists; use load(), or reset() to replace it"
                )
            if non_empty:
                if not _is_removable_pki_dir(target):
                    raise SimulatedPKIError(
                        f"refusing to delete {target}: it holds files that are not part "
                        "of a simulated PKI"
                    )
                shutil.rmtree(target)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        except OSError as exc:
            raise SimulatedPKIError(f"cannot create simulated PKI at {target}: {exc}") from None
        try:
            cls._generate(staging)
            try:
                os.rename(staging, target)  # atomic; fails if someone else got there first
            except OSError as exc:
                if target.is_dir() and any(target.iterdir()):
                    raise FileExistsError(f"{target} was created concurrently") from exc
                raise SimulatedPKIError(
                    f"cannot create simulated PKI at {target}: {exc.strerror}"
                ) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls.load(target)

    @classmethod
    def reset(cls, directory: str | os.PathLike[str] | None = None) -> SimulatedPKI:
        """Delete the PKI in ``directory`` (if any) and generate a new one (new root)."""
        return cls.create(directory, overwrite=True)

    @classmethod
    def load(cls, directory: str | os.PathLike[str] | None = None) -> SimulatedPKI:
        """Load an existing PKI; raise :class:`SimulatedPKIError` if missing or damaged."""
        target = _resolve(directory)
        if not (target / _META).is_file():
            raise SimulatedPKIError(
                f"no simulated PKI at {target}; create one with `ppml-kernel sim init`"
            )
        try:
            meta = json.loads(_read(target / _META))
            if meta.get("format") != FORMAT_VERSION:
                raise SimulatedPKIError(
                    f"simulated PKI at {target} has format {meta.get('format')!r}, "
                    f"expected {FORMAT_VERSION}; run `ppml-kernel sim reset`"
                )
            keys = {name: _load_key(target / name) for name in _KEY_FILES}
            certs = {
                name: _load_cert(target / name) for name in (_ROOT_CERT, _PLATFORM_CERT, _TCB_CERT)
            }
        except (OSError, json.JSONDecodeError, KeyError) as exc:
            raise SimulatedPKIError(f"cannot read simulated PKI at {target}: {exc}") from None
        root = certs[_ROOT_CERT]
        _check_pair(target / _ROOT_CERT, root, keys[_ROOT_KEY], root)
        _check_pair(target / _PLATFORM_CERT, certs[_PLATFORM_CERT], keys[_PLATFORM_KEY], root)
        _check_pair(target / _TCB_CERT, certs[_TCB_CERT], keys[_TCB_KEY], root)
        return cls(target, meta, keys, certs)

    @staticmethod
    def _generate(directory: Path) -> None:
        now = _utcnow()
        validity = (now - CLOCK_SKEW, now + CA_LIFETIME)
        root_key, platform_key, tcb_key, attestation_key = (_new_key() for _ in range(4))
        root = _issue(ROOT_CN, root_key.public_key(), None, root_key, validity, ca_path_length=1)
        platform = _issue(
            PLATFORM_CA_CN, platform_key.public_key(), root, root_key, validity, ca_path_length=0
        )
        tcb_signing = _issue(
            TCB_SIGNING_CN, tcb_key.public_key(), root, root_key, validity, ca_path_length=None
        )
        for name, key in (
            (_ROOT_KEY, root_key),
            (_PLATFORM_KEY, platform_key),
            (_TCB_KEY, tcb_key),
            (_ATTESTATION_KEY, attestation_key),
        ):
            _write_private(directory / name, _key_pem(key))
        for name, cert in (
            (_ROOT_CERT, root),
            (_PLATFORM_CERT, platform),
            (_TCB_CERT, tcb_signing),
        ):
            _write_public(directory / name, _cert_pem(cert))
        (directory / _PCK_DIR).mkdir(mode=0o700)
        _write_public(directory / _README, _README_TEXT.encode())
        meta = {
            "format": FORMAT_VERSION,
            "simulated": True,
            "created_at": now.isoformat(),
            "ppid": secrets.token_bytes(16).hex(),
            "root_sha256_fingerprint": hashlib.sha256(
                root.public_bytes(serialization.Encoding.DER)
            ).hexdigest(),
        }
        # Written last: its presence is what marks a complete PKI.
        _write_public(directory / _META, json.dumps(meta, indent=2).encode() + b"\n")

    # ---- PCK leaves (one per emulated TCB level, made on first use) ----------------------

    def pck_leaf(self, tcb_status: str = tcb.DEFAULT_TCB_STATUS) -> PckLeaf:
        """The PCK leaf for the platform that sits on TCB level ``tcb_status``."""
        leaf = self._leaves.get(tcb_status)
        if leaf is None:
            level = tcb.tcb_level(tcb_status)
            leaf = self._load_leaf(level) or self._create_leaf(level)
            self._leaves[tcb_status] = leaf
        return leaf

    def _leaf_path(self, level: tcb.TcbLevel) -> Path:
        return self.directory / _PCK_DIR / f"{level.status}.pem"

    def _expected_extension(self, level: tcb.TcbLevel) -> bytes:
        return sgx_extension_value(
            ppid=self.ppid,
            cpu_svn=level.cpu_svn,
            pce_svn=level.pce_svn,
            pce_id=self.pce_id,
            fmspc=self.fmspc,
        )

    def _load_leaf(self, level: tcb.TcbLevel) -> PckLeaf | None:
        path = self._leaf_path(level)
        if not path.is_file():
            return None
        data = _read(path)
        _check_private_mode(path)
        try:
            key = serialization.load_pem_private_key(data, password=None)
            cert = x509.load_pem_x509_certificate(data[data.index(b"-----BEGIN CERTIFICATE") :])
            ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
        except (ValueError, TypeError, x509.ExtensionNotFound):
            return None  # damaged: issue a fresh one
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            return None
        _check_pair(path, cert, key, self.platform_ca_certificate)
        # A leaf made by another version of the TCB table would emulate the wrong level.
        if ext.value.value != self._expected_extension(level):  # type: ignore[attr-defined]
            return None
        if cert.not_valid_after_utc <= _utcnow() + dt.timedelta(days=1):
            return None
        return PckLeaf(level.status, cert, _cert_pem(cert), key)

    def _create_leaf(self, level: tcb.TcbLevel) -> PckLeaf:
        now = _utcnow()
        key = _new_key()
        platform_ca = self.platform_ca_certificate
        validity = (now - CLOCK_SKEW, min(now + LEAF_LIFETIME, platform_ca.not_valid_after_utc))
        cert = _issue(
            PCK_LEAF_CN,
            key.public_key(),
            platform_ca,
            self._platform_key,
            validity,
            ca_path_length=None,
            extra=(
                x509.UnrecognizedExtension(
                    x509.ObjectIdentifier(SGX_EXTENSION_OID), self._expected_extension(level)
                ),
            ),
        )
        path = self._leaf_path(level)
        staging = path.with_name(f".tmp-{secrets.token_hex(8)}")
        try:
            _write_private(staging, _key_pem(key) + _cert_pem(cert))
            os.replace(staging, path)
        except OSError as exc:
            raise SimulatedPKIError(f"cannot write PCK certificate {path}: {exc}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                staging.unlink()
        return PckLeaf(level.status, cert, _cert_pem(cert), key)

    # ---- signing services (keys stay private) -------------------------------------------

    def sign_report(self, data: bytes) -> bytes:
        """Raw ``r || s`` by the attestation key (the ISV report signature)."""
        return raw_ecdsa_sign(self._attestation_key, data)

    def sign_collateral(self, data: bytes) -> bytes:
        """Raw ``r || s`` by the TCB signing key (TCB Info, QE Identity)."""
        return raw_ecdsa_sign(self._tcb_key, data)

    def root_crl(self, this_update: dt.datetime, next_update: dt.datetime) -> bytes:
        """An empty DER CRL signed by the root CA (covers the Platform CA and TCB signer)."""
        return self._crl(self.root_certificate, self._root_key, this_update, next_update)

    def pck_crl(self, this_update: dt.datetime, next_update: dt.datetime) -> bytes:
        """An empty DER CRL signed by the PCK Platform CA (covers the PCK leaves)."""
        return self._crl(self.platform_ca_certificate, self._platform_key, this_update, next_update)

    @staticmethod
    def _crl(
        issuer: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        this_update: dt.datetime,
        next_update: dt.datetime,
    ) -> bytes:
        return build_crl(
            issuer=issuer.subject,
            issuer_key=key,
            this_update=this_update,
            next_update=next_update,
            number=int(this_update.timestamp()),
            authority_key=issuer.public_key(),  # type: ignore[arg-type]
        )

    # ---- facts --------------------------------------------------------------------------

    def _stat_identity(self) -> tuple[int, int] | None:
        try:
            st = (self.directory / _META).stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def is_current(self) -> bool:
        """False once the directory was reset or removed by someone else (cheap: one stat)."""
        return self._identity is not None and self._stat_identity() == self._identity

    def describe(self) -> dict[str, object]:
        """Paths, fingerprints, subjects and validity; never key material."""
        pck_dir = self.directory / _PCK_DIR
        leaves = {}
        for level in tcb.TCB_LEVELS:
            leaf = self._leaves.get(level.status) or (
                self._load_leaf(level) if self._leaf_path(level).is_file() else None
            )
            if leaf is not None:
                leaves[level.status] = _cert_facts(leaf.certificate, self._leaf_path(level))
        return {
            "simulated": True,
            "warning": "SIMULATED SGX PKI: quotes it signs protect nothing; "
            "never trust this root in production",
            "directory": str(self.directory),
            "created_at": self.created_at.isoformat(),
            "root_fingerprint": self.root_fingerprint,
            "root": _cert_facts(self.root_certificate, self.directory / _ROOT_CERT),
            "pck_platform_ca": _cert_facts(
                self.platform_ca_certificate, self.directory / _PLATFORM_CERT
            ),
            "tcb_signing": _cert_facts(self.tcb_signing_certificate, self.directory / _TCB_CERT),
            "pck_leaves": leaves,
            "private_key_files": [str(self.directory / name) for name in _KEY_FILES]
            + [str(self._leaf_path(tcb.tcb_level(s))) for s in leaves],
            "pck_directory": str(pck_dir),
            "fmspc": self.fmspc.hex().upper(),
            "pce_id": self.pce_id.hex().upper(),
            "ppid": self.ppid.hex(),
            "default_mrsigner": self.default_mrsigner.hex(),
            "qe_mrsigner": self.qe_mrsigner.hex(),
            "attestation_public_key": self.attestation_public_key.hex(),
            "tcb_statuses": list(tcb.TCB_STATUSES),
        }

    def __repr__(self) -> str:
        return f"SimulatedPKI({str(self.directory)!r}, root={self.root_fingerprint[:16]}...)"
