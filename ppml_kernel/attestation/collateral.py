"""Collateral: the signed, expiring documents a quote is verified against.

Fetched from Intel PCS or an operator's PCCS (same v4 paths) with ``requests``
(TLS verification on, timeouts), cached on disk until the earliest of its
validity windows ends. dcap-qvl's own network helpers are not used: they default
to a third-party service and misbehave offline (BRIEF §3).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote

from ppml_kernel.attestation.errors import CollateralError
from ppml_kernel.attestation.quote import parse_quote

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
INTEL_ROOT_CA_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
DEFAULT_TIMEOUT = 10.0
ENV_PCCS_URL = "PPML_PCCS_URL"
REQUIRED_FIELDS = (
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
)


@dataclass(frozen=True)
class Window:
    """A validity window of one collateral document (Unix seconds)."""

    name: str
    not_before: int
    not_after: int

    def contains(self, at: int) -> bool:
        return self.not_before <= at <= self.not_after


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _rfc3339(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


@dataclass(frozen=True)
class Collateral:
    """dcap-qvl ``QuoteCollateralV3`` JSON text plus readable validity windows."""

    text: str

    @classmethod
    def from_json(cls, text: str, source: str = "collateral") -> Collateral:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CollateralError(f"{source} is not valid JSON: {exc}") from None
        missing = [f for f in REQUIRED_FIELDS if not isinstance(data.get(f), str)]
        if missing:
            raise CollateralError(f"{source} lacks field(s): {', '.join(missing)}")
        return cls(text)

    @classmethod
    def load(cls, path: str | Path) -> Collateral:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise CollateralError(f"cannot read collateral file {path}: {exc.strerror}") from None
        return cls.from_json(text, source=f"collateral file {path}")

    def to_qvl(self):  # -> dcap_qvl.QuoteCollateralV3
        import dcap_qvl

        try:
            return dcap_qvl.QuoteCollateralV3.from_json(self.text)
        except ValueError as exc:
            raise CollateralError(f"collateral rejected by dcap-qvl: {exc}") from None

    def windows(self) -> list[Window]:
        """Validity windows of TCB Info, QE Identity and both CRLs."""
        from cryptography import x509

        data = json.loads(self.text)
        out = []
        for name, key in (("TCB Info", "tcb_info"), ("QE Identity", "qe_identity")):
            doc = json.loads(data[key])
            out.append(Window(name, _rfc3339(doc["issueDate"]), _rfc3339(doc["nextUpdate"])))
        for name, key in (("Root CA CRL", "root_ca_crl"), ("PCK CRL", "pck_crl")):
            crl = x509.load_der_x509_crl(bytes.fromhex(data[key]))
            nxt = crl.next_update_utc
            out.append(
                Window(
                    name,
                    int(crl.last_update_utc.timestamp()),
                    int(nxt.timestamp()) if nxt else 2**63 - 1,
                )
            )
        return out

    def expires_at(self) -> int:
        return min(w.not_after for w in self.windows())


def describe_windows(windows: list[Window], at: int) -> list[tuple[str, str, bool]]:
    """Rows of (document, "from - to", valid at ``at``) for reports."""
    return [
        (w.name, f"{_iso(w.not_before)} - {_iso(w.not_after)}", w.contains(at)) for w in windows
    ]


def _issuer_chain(response, *names: str) -> str:
    for name in names:
        value = response.headers.get(name)
        if value:
            return unquote(value)
    raise CollateralError(f"{response.url} answered without the {names[0]} header")


def _raw_member(body: str, key: str) -> str:
    """The exact text of the JSON object ``key`` in ``body``: the signature covers these bytes."""
    start = body.find(f'"{key}"')
    if start < 0:
        raise CollateralError(f"response has no {key!r}")
    start = body.index("{", start)
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(body)):
        ch = body[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return body[start : i + 1]
    raise CollateralError(f"response has an unterminated {key!r} object")


class CollateralClient:
    """Fetch collateral for a quote from Intel PCS or a PCCS, with an on-disk cache."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        cache_dir: str | Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        root_ca_crl_url: str | None = None,
        verify_tls: bool | str = True,
    ) -> None:
        self.base_url = (base_url or os.environ.get(ENV_PCCS_URL) or INTEL_PCS_URL).rstrip("/")
        self.is_intel = self.base_url == INTEL_PCS_URL
        self.root_ca_crl_url = root_ca_crl_url or (
            INTEL_ROOT_CA_CRL_URL
            if self.is_intel
            else f"{self.base_url}/sgx/certification/v4/rootcacrl"
        )
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.timeout = timeout
        self.verify_tls = verify_tls

    def for_quote(self, raw_quote: bytes, *, at: int | None = None) -> Collateral:
        """Cached collateral for this quote's platform, fetched when missing or expired."""
        info = parse_quote(raw_quote)
        if not info.fmspc or not info.pck_ca:
            raise CollateralError("the quote carries no PCK certificate chain to find its FMSPC")
        now = int(time.time()) if at is None else at
        cache = self._cache_path(info.tee.lower(), info.fmspc, info.pck_ca)
        cached = self._read_cache(cache, now)
        if cached is not None:
            return cached
        collateral = self.fetch(info.tee.lower(), info.fmspc, info.pck_ca)
        self._write_cache(cache, collateral)
        return collateral

    def fetch(self, tee: str, fmspc: str, pck_ca: str) -> Collateral:
        """Fetch all four documents now (no cache)."""
        base = self.base_url
        pck = self._get(f"{base}/sgx/certification/v4/pckcrl", {"ca": pck_ca, "encoding": "der"})
        tcb = self._get(f"{base}/{tee}/certification/v4/tcb", {"fmspc": fmspc})
        qe = self._get(f"{base}/{tee}/certification/v4/qe/identity", None)
        root = self._get(self.root_ca_crl_url, None)
        tcb_body, qe_body = tcb.text, qe.text
        try:
            tcb_sig = json.loads(tcb_body)["signature"]
            qe_sig = json.loads(qe_body)["signature"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise CollateralError(
                f"{base} returned TCB Info or QE Identity without a signature"
            ) from None
        data = {
            "pck_crl_issuer_chain": _issuer_chain(pck, "SGX-PCK-CRL-Issuer-Chain"),
            "root_ca_crl": _crl_hex(root.content),
            "pck_crl": _crl_hex(pck.content),
            "tcb_info_issuer_chain": _issuer_chain(
                tcb, "TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"
            ),
            "tcb_info": _raw_member(tcb_body, "tcbInfo"),
            "tcb_info_signature": tcb_sig,
            "qe_identity_issuer_chain": _issuer_chain(qe, "SGX-Enclave-Identity-Issuer-Chain"),
            "qe_identity": _raw_member(qe_body, "enclaveIdentity"),
            "qe_identity_signature": qe_sig,
        }
        return Collateral.from_json(json.dumps(data), source=f"collateral from {base}")

    def _get(self, url: str, params: dict[str, str] | None):
        import requests

        try:
            response = requests.get(
                url, params=params, timeout=self.timeout, verify=self.verify_tls
            )
        except requests.exceptions.SSLError as exc:
            raise CollateralError(f"TLS verification failed for {url}: {exc}") from None
        except requests.exceptions.Timeout:
            raise CollateralError(f"{url} did not answer within {self.timeout:g} s") from None
        except requests.exceptions.ConnectionError:
            raise CollateralError(
                f"cannot reach {url} (offline?). Pass collateral from a file, "
                f"or point ${ENV_PCCS_URL} / --pccs at a reachable PCCS"
            ) from None
        if response.status_code != 200:
            raise CollateralError(f"{response.url} answered HTTP {response.status_code}")
        return response

    def _cache_path(self, tee: str, fmspc: str, pck_ca: str) -> Path:
        key = hashlib.sha256(f"{self.base_url}|{tee}|{fmspc}|{pck_ca}".encode()).hexdigest()[:32]
        return self.cache_dir / f"{tee}-{fmspc.lower()}-{pck_ca}-{key}.json"

    @staticmethod
    def _read_cache(path: Path, now: int) -> Collateral | None:
        try:
            collateral = Collateral.from_json(path.read_text())
            if all(w.contains(now) for w in collateral.windows()):
                return collateral
        except (OSError, CollateralError, ValueError, KeyError):
            pass
        return None

    @staticmethod
    def _write_cache(path: Path, collateral: Collateral) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(collateral.text)
        os.replace(tmp, path)


def _crl_hex(body: bytes) -> str:
    """A CRL as hex DER, whether it arrived as DER, hex text or PEM."""
    stripped = body.strip()
    if stripped.startswith(b"-----BEGIN"):
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        return x509.load_pem_x509_crl(stripped).public_bytes(Encoding.DER).hex()
    try:
        return bytes.fromhex(stripped.decode("ascii")).hex()
    except (UnicodeDecodeError, ValueError):
        return body.hex()


def default_cache_dir() -> Path:
    """Where fetched collateral is cached (it is public data: no secrecy needed)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ppml-kernel" / "collateral"
