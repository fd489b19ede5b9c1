"""Collateral (dcap-qvl ``QuoteCollateralV3`` JSON) for the simulated PKI.

Real platforms get TCB Info, QE Identity and CRLs from Intel PCS or a PCCS; the
simulator signs its own, in the same formats (TCB Info v3 ``"id":"SGX"``, QE
Identity v2, DER CRLs as hex, PEM issuer chains, signatures as hex ``r || s``
over the exact JSON bytes). Like Intel's, it is valid for 30 days, so the
verifier's freshness checks are exercised for real.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import weakref
from collections.abc import Callable

from ppml_kernel.tee.simulated import tcb
from ppml_kernel.tee.simulated.pki import SimulatedPKI

VALIDITY = dt.timedelta(days=30)
BACKDATE = dt.timedelta(hours=1)  # tolerate a verifier whose clock is a little behind
REFRESH_MARGIN = dt.timedelta(days=1)

_cache: weakref.WeakKeyDictionary[SimulatedPKI, tuple[dt.datetime, dt.datetime, str]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def _as_datetime(now: float | dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    if isinstance(now, dt.datetime):
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return now.astimezone(dt.timezone.utc).replace(microsecond=0)
    return dt.datetime.fromtimestamp(int(now), dt.timezone.utc)


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def tcb_level_entry(
    components: tuple[int, ...] | list[int],
    pce_svn: int,
    status: str,
    tcb_date: str,
    advisory_ids: tuple[str, ...] | list[str] = (),
) -> dict[str, object]:
    """One TCB Info level (``advisoryIDs`` only when there are any, as Intel's)."""
    entry: dict[str, object] = {
        "tcb": {"sgxtcbcomponents": [{"svn": svn} for svn in components], "pcesvn": pce_svn},
        "tcbDate": tcb_date,
        "tcbStatus": status,
    }
    if advisory_ids:
        entry["advisoryIDs"] = list(advisory_ids)
    return entry


def qe_level_entry(
    isvsvn: int, status: str, tcb_date: str, advisory_ids: tuple[str, ...] | list[str] = ()
) -> dict[str, object]:
    """One QE Identity (or TDX module identity) level."""
    entry: dict[str, object] = {"tcb": {"isvsvn": isvsvn}, "tcbDate": tcb_date, "tcbStatus": status}
    if advisory_ids:
        entry["advisoryIDs"] = list(advisory_ids)
    return entry


def tcb_info_document(
    *,
    fmspc: bytes,
    issue: dt.datetime,
    next_update: dt.datetime,
    levels: list[dict[str, object]],
    pce_id: bytes = tcb.PCE_ID,
    ident: str = "SGX",
    version: int = 3,
    evaluation_data_number: int = tcb.TCB_EVALUATION_DATA_NUMBER,
    **extra: object,
) -> dict[str, object]:
    """A TCB Info document in Intel's key order; v2 has no ``id``; ``extra`` keys go last
    (e.g. a TDX module identity). Every field is a knob for tests that forge variants."""
    doc: dict[str, object] = {
        "id": ident,
        "version": version,
        "issueDate": _iso(issue),
        "nextUpdate": _iso(next_update),
        "fmspc": fmspc.hex().upper(),
        "pceId": pce_id.hex().upper(),
        "tcbType": 0,
        "tcbEvaluationDataNumber": evaluation_data_number,
        "tcbLevels": levels,
        **extra,
    }
    if version == 2:
        del doc["id"]
    return doc


def qe_identity_document(
    *,
    issue: dt.datetime,
    next_update: dt.datetime,
    mrsigner: bytes,
    levels: list[dict[str, object]],
    isvprodid: int = tcb.QE_ISVPRODID,
    ident: str = "QE",
    version: int = 2,
    evaluation_data_number: int = tcb.TCB_EVALUATION_DATA_NUMBER,
    miscselect: str = tcb.QE_MISCSELECT.to_bytes(4, "little").hex().upper(),
    miscselect_mask: str = "FFFFFFFF",
    attributes: str = tcb.QE_IDENTITY_ATTRIBUTES.hex().upper(),
    attributes_mask: str = tcb.QE_IDENTITY_ATTRIBUTES_MASK.hex().upper(),
) -> dict[str, object]:
    """A QE Identity document in Intel's key order (hex fields as written in it)."""
    return {
        "id": ident,
        "version": version,
        "issueDate": _iso(issue),
        "nextUpdate": _iso(next_update),
        "tcbEvaluationDataNumber": evaluation_data_number,
        "miscselect": miscselect,
        "miscselectMask": miscselect_mask,
        "attributes": attributes,
        "attributesMask": attributes_mask,
        "mrsigner": mrsigner.hex().upper(),
        "isvprodid": isvprodid,
        "tcbLevels": levels,
    }


def compact(document: object) -> str:
    """The exact JSON text that is signed (no spaces, as Intel's PCS serves it)."""
    return json.dumps(document, separators=(",", ":"))


def collateral_document(
    *,
    root_pem: str,
    platform_ca_pem: str,
    tcb_signing_pem: str,
    root_ca_crl: bytes,
    pck_crl: bytes,
    tcb_info: str,
    qe_identity: str,
    sign: Callable[[bytes], bytes],
) -> dict[str, str]:
    """dcap-qvl ``QuoteCollateralV3`` fields; ``sign`` signs TCB Info and QE Identity."""
    tcb_chain = tcb_signing_pem + root_pem
    return {
        "pck_crl_issuer_chain": platform_ca_pem + root_pem,
        "root_ca_crl": root_ca_crl.hex(),
        "pck_crl": pck_crl.hex(),
        "tcb_info_issuer_chain": tcb_chain,
        "tcb_info": tcb_info,
        "tcb_info_signature": sign(tcb_info.encode()).hex(),
        "qe_identity_issuer_chain": tcb_chain,
        "qe_identity": qe_identity,
        "qe_identity_signature": sign(qe_identity.encode()).hex(),
    }


def tcb_info_json(pki: SimulatedPKI, issue: dt.datetime, next_update: dt.datetime) -> str:
    """TCB Info v3 for the simulated FMSPC: one level per emulated platform status."""
    levels = [
        tcb_level_entry(lv.components, lv.pce_svn, lv.status, lv.tcb_date, lv.advisory_ids)
        for lv in tcb.TCB_LEVELS
    ]
    return compact(
        tcb_info_document(
            fmspc=pki.fmspc, pce_id=pki.pce_id, issue=issue, next_update=next_update, levels=levels
        )
    )


def qe_identity_json(pki: SimulatedPKI, issue: dt.datetime, next_update: dt.datetime) -> str:
    """QE Identity v2 describing the simulated Quoting Enclave."""
    levels = [
        qe_level_entry(isvsvn, status, date, advisories)
        for isvsvn, date, status, advisories in tcb.QE_TCB_LEVELS
    ]
    return compact(
        qe_identity_document(
            issue=issue, next_update=next_update, mrsigner=pki.qe_mrsigner, levels=levels
        )
    )


def build_collateral(pki: SimulatedPKI, now: float | dt.datetime | None = None) -> str:
    """Fresh collateral JSON valid from ``now - 1 h`` to ``now + 30 days`` (not cached)."""
    moment = _as_datetime(now)
    issue, next_update = moment - BACKDATE, moment + VALIDITY
    return json.dumps(
        collateral_document(
            root_pem=pki.root_pem.decode(),
            platform_ca_pem=pki.platform_ca_pem.decode(),
            tcb_signing_pem=pki.tcb_signing_pem.decode(),
            root_ca_crl=pki.root_crl(issue, next_update),
            pck_crl=pki.pck_crl(issue, next_update),
            tcb_info=tcb_info_json(pki, issue, next_update),
            qe_identity=qe_identity_json(pki, issue, next_update),
            sign=pki.sign_collateral,
        )
    )


def collateral_json(pki: SimulatedPKI, now: float | dt.datetime | None = None) -> str:
    """Collateral valid at ``now`` (default: the current time), cached per PKI in memory.

    The cached copy is reused until it is within a day of its ``nextUpdate`` (or
    ``now`` lies before its issue date); then a new one is signed.
    """
    moment = _as_datetime(now)
    with _lock:
        cached = _cache.get(pki)
        if cached is not None:
            issue, next_update, text = cached
            if issue <= moment <= next_update - REFRESH_MARGIN:
                return text
        text = build_collateral(pki, moment)
        _cache[pki] = (moment - BACKDATE, moment + VALIDITY, text)
        return text
