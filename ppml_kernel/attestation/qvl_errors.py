"""dcap-qvl's failure messages in words: no Rust debug values reach a person.

dcap-qvl passes some webpki errors through with Rust's ``Debug`` formatting, e.g.
``Verification failed: CrlExpired { time: UnixTime(1877344000), next_update:
UnixTime(1775215317) }``. :func:`explain` names the expired item (matching the
collateral's validity windows and the certificates of the quote and the collateral)
and gives its dates in UTC. Anything it does not recognise is still rewritten: times
become dates, ``CamelCase`` names become words, and no ``{ ... }`` survives.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from ppml_kernel.attestation.collateral import Window

_STRUCT = re.compile(r"\b([A-Z][A-Za-z0-9]*)\s*\{([^{}]*)\}")
_UNIX = re.compile(r"UnixTime\((\d+)\)")
_FIELD = re.compile(r"(\w+)\s*:\s*([^,]+)")
_PREFIX = "Verification failed: "
_WORDS = {
    "CertRevoked": "a certificate in the chain is revoked (listed in the PCK or Root CA CRL)",
    "UnknownIssuer": "a certificate's issuer is neither in the chain nor the trusted root",
    "BadSignature": "a signature does not verify",
    "InvalidSignatureForPublicKey": "a certificate's signature does not verify",
    "InvalidCrlSignatureForPublicKey": "a CRL's signature does not verify under its issuer",
    "IssuerNotCrlSigner": "a CRL is signed by a certificate that may not sign CRLs",
    "UnknownRevocationStatus": "a certificate's revocation status is unknown (no matching CRL)",
    "BadDer": "a certificate or CRL is not valid DER",
    "BadDerTime": "a certificate or CRL has an invalid time field",
}


def _date(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _words(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).lower()


def _certificates(raw_quote: bytes | None, collateral_text: str | None) -> list[tuple[str, Any]]:
    """(where, certificate) for the quote's PCK chain and the collateral's issuer chains."""
    from cryptography import x509

    found: list[tuple[str, Any]] = []
    chains: list[tuple[str, bytes]] = []
    if raw_quote:
        try:
            import dcap_qvl

            chains.append(("the quote's PCK chain",
                           bytes(dcap_qvl.parse_quote(raw_quote).cert_chain_pem_bytes())))
        except (ValueError, ImportError):
            pass
    if collateral_text:
        try:
            data = json.loads(collateral_text)
        except ValueError:
            data = {}
        for key, where in (("pck_crl_issuer_chain", "the PCK CRL issuer chain"),
                           ("tcb_info_issuer_chain", "the TCB Info issuer chain"),
                           ("qe_identity_issuer_chain", "the QE Identity issuer chain")):
            if isinstance(data.get(key), str):
                chains.append((where, data[key].encode()))
    for where, pem in chains:
        try:
            found.extend((where, cert) for cert in x509.load_pem_x509_certificates(pem))
        except ValueError:
            continue
    return found


def _cert_named(ts: int, attribute: str, certs: list[tuple[str, Any]]) -> str:
    from cryptography.x509.oid import NameOID

    for where, cert in certs:
        if int(getattr(cert, attribute).timestamp()) == ts:
            names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            cn = str(names[0].value) if names else cert.subject.rfc4514_string()
            return (f"the certificate {cn!r} in {where} (valid "
                    f"{_date(int(cert.not_valid_before_utc.timestamp()))} to "
                    f"{_date(int(cert.not_valid_after_utc.timestamp()))})")
    return "a certificate in the quote's or the collateral's chain"


def _window_named(ts: int, windows: Sequence[Window], kind: str) -> str:
    for w in windows:
        if kind in w.name and abs(w.not_after - ts) <= 1:
            return f"the {w.name} (valid {_date(w.not_before)} to {_date(w.not_after)})"
    return f"a {kind}"


def _fields(body: str) -> dict[str, int | str]:
    out: dict[str, int | str] = {}
    for key, value in _FIELD.findall(body):
        value = value.strip()
        unix = _UNIX.fullmatch(value)
        out[key] = int(unix.group(1)) if unix else value
    return out


def _struct(match: re.Match[str], windows: Sequence[Window],
            certs: list[tuple[str, Any]]) -> str:
    name, fields = match.group(1), _fields(match.group(2))
    at = fields.get("time")
    when = f"; verification time {_date(at)}" if isinstance(at, int) else ""
    if name == "CrlExpired" and isinstance(fields.get("next_update"), int):
        due = int(fields["next_update"])
        return f"{_window_named(due, windows, 'CRL')} has expired: its next update was due " \
            f"{_date(due)}{when}"
    if name == "CertExpired" and isinstance(fields.get("not_after"), int):
        what = _cert_named(int(fields["not_after"]), "not_valid_after_utc", certs)
        return f"{what} has expired{when}"
    if name == "CertNotValidYet" and isinstance(fields.get("not_before"), int):
        what = _cert_named(int(fields["not_before"]), "not_valid_before_utc", certs)
        return f"{what} is not valid yet{when}"
    parts = [f"{k.replace('_', ' ')} {_date(v) if isinstance(v, int) else v}"
             for k, v in fields.items()]
    return _WORDS.get(name, _words(name)) + (f" ({', '.join(parts)})" if parts else "")


def _named_document(message: str, windows: Sequence[Window]) -> str:
    """``TCBInfo expired`` and friends: add the document's validity dates."""
    for key, name in (("TCBInfo", "TCB Info"), ("QE Identity", "QE Identity")):
        if message.startswith(key) and ("expired" in message or "future" in message):
            for w in windows:
                if w.name == name:
                    state = "has expired" if "expired" in message else "is not valid yet"
                    return (f"the {name} {state} (valid {_date(w.not_before)} to "
                            f"{_date(w.not_after)})")
    return message


def explain(message: str, windows: Sequence[Window] = (), *, raw_quote: bytes | None = None,
            collateral_text: str | None = None, at: int | None = None) -> str:
    """``message`` from dcap-qvl, rewritten for people (see the module docstring)."""
    prefix = _PREFIX if message.startswith(_PREFIX) else ""
    original = message[len(prefix):]
    text = re.sub(r"\s*\n\s*Caused by:\s*", ": ", original.strip())  # anyhow's chain, one line
    text = re.sub(r"\s*\n\s*", " ", text)
    text = _named_document(text, windows)
    if _STRUCT.search(text):
        certs = _certificates(raw_quote, collateral_text) if "Cert" in text else []
        text = _STRUCT.sub(lambda m: _struct(m, windows, certs), text)
    elif text in _WORDS:
        text = _WORDS[text]
    elif re.fullmatch(r"[A-Z][a-z]+(?:[A-Z][a-z0-9]*)+", text):
        text = _words(text)
    text = _UNIX.sub(lambda m: _date(int(m.group(1))), text).replace("{", "(").replace("}", ")")
    if text == original:
        return message
    if at is not None and "verification time" not in text:
        text += f"; verification time {_date(at)}"
    return prefix + text
