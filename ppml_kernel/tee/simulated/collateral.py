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


def _compact(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def tcb_info_json(pki: SimulatedPKI, issue: dt.datetime, next_update: dt.datetime) -> str:
    """TCB Info v3 for the simulated FMSPC: one level per emulated platform status."""
    levels = []
    for level in tcb.TCB_LEVELS:
        entry: dict[str, object] = {
            "tcb": {
                "sgxtcbcomponents": [{"svn": svn} for svn in level.components],
                "pcesvn": level.pce_svn,
            },
            "tcbDate": level.tcb_date,
            "tcbStatus": level.status,
        }
        if level.advisory_ids:
            entry["advisoryIDs"] = list(level.advisory_ids)
        levels.append(entry)
    return _compact(
        {
            "id": "SGX",
            "version": 3,
            "issueDate": _iso(issue),
            "nextUpdate": _iso(next_update),
            "fmspc": pki.fmspc.hex().upper(),
            "pceId": pki.pce_id.hex().upper(),
            "tcbType": 0,
            "tcbEvaluationDataNumber": tcb.TCB_EVALUATION_DATA_NUMBER,
            "tcbLevels": levels,
        }
    )


def qe_identity_json(pki: SimulatedPKI, issue: dt.datetime, next_update: dt.datetime) -> str:
    """QE Identity v2 describing the simulated Quoting Enclave."""
    levels = []
    for isvsvn, date, status, advisories in tcb.QE_TCB_LEVELS:
        entry: dict[str, object] = {"tcb": {"isvsvn": isvsvn}, "tcbDate": date, "tcbStatus": status}
        if advisories:
            entry["advisoryIDs"] = list(advisories)
        levels.append(entry)
    return _compact(
        {
            "id": "QE",
            "version": 2,
            "issueDate": _iso(issue),
            "nextUpdate": _iso(next_update),
            "tcbEvaluationDataNumber": tcb.TCB_EVALUATION_DATA_NUMBER,
            "miscselect": tcb.QE_MISCSELECT.to_bytes(4, "little").hex().upper(),
            "miscselectMask": "FFFFFFFF",
            "attributes": tcb.QE_IDENTITY_ATTRIBUTES.hex().upper(),
            "attributesMask": tcb.QE_IDENTITY_ATTRIBUTES_MASK.hex().upper(),
            "mrsigner": pki.qe_mrsigner.hex().upper(),
            "isvprodid": tcb.QE_ISVPRODID,
            "tcbLevels": levels,
        }
    )


def build_collateral(pki: SimulatedPKI, now: float | dt.datetime | None = None) -> str:
    """Fresh collateral JSON valid from ``now - 1 h`` to ``now + 30 days`` (not cached)."""
    moment = _as_datetime(now)
    issue, next_update = moment - BACKDATE, moment + VALIDITY
    tcb_info = tcb_info_json(pki, issue, next_update)
    qe_identity = qe_identity_json(pki, issue, next_update)
    tcb_chain = (pki.tcb_signing_pem + pki.root_pem).decode()
    return json.dumps(
        {
            "pck_crl_issuer_chain": (pki.platform_ca_pem + pki.root_pem).decode(),
            "root_ca_crl": pki.root_crl(issue, next_update).hex(),
            "pck_crl": pki.pck_crl(issue, next_update).hex(),
            "tcb_info_issuer_chain": tcb_chain,
            "tcb_info": tcb_info,
            "tcb_info_signature": pki.sign_collateral(tcb_info.encode()).hex(),
            "qe_identity_issuer_chain": tcb_chain,
            "qe_identity": qe_identity,
            "qe_identity_signature": pki.sign_collateral(qe_identity.encode()).hex(),
        }
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
