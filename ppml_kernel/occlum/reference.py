"""Reference values: the measurements a verifier pins for an enclave build.

Written by the image build (``images/occlum/build-instance.sh``) right after ``occlum build``,
and imported by the browser's policy and the Python ``Policy``. Several MRENCLAVE
values may be listed so a rolling upgrade accepts the old and the new build.

Shape (``ppml-reference-values/1``)::

    {"schema": "ppml-reference-values/1", "tee": "sgx",
     "mrenclave": [hex], "mrsigner": [hex], "isv_prod_id": int, "min_isv_svn": int,
     "allowed_tcb_statuses": [...]}
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from ppml_kernel.attestation.policy import DEFAULT_ALLOWED_TCB_STATUSES
from ppml_kernel.attestation.policy import KNOWN_TCB_STATUSES as ALL_TCB_STATUSES
from ppml_kernel.occlum.errors import OcclumError

SCHEMA = "ppml-reference-values/1"
DEFAULT_TCB_STATUSES = DEFAULT_ALLOWED_TCB_STATUSES
# dcap-qvl's status names (CamelCase); Revoked is never acceptable.
KNOWN_TCB_STATUSES = frozenset(ALL_TCB_STATUSES) - {"Revoked"}
_HEX32 = re.compile(r"^[0-9a-f]{64}$")


class ReferenceValuesError(OcclumError, ValueError):
    """Reference values that a verifier could not use safely."""


def _measurement(value: str, name: str) -> str:
    text = value.strip().lower().removeprefix("0x")
    if not _HEX32.match(text):
        raise ReferenceValuesError(f"{name} must be 32 bytes of hex (64 digits), got {value!r}")
    if text == "0" * 64:
        raise ReferenceValuesError(f"{name} is all zeros: the build did not produce it")
    return text


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def reference_values(
    *,
    mrenclave: Iterable[str],
    mrsigner: Iterable[str],
    isv_prod_id: int,
    min_isv_svn: int,
    allowed_tcb_statuses: Iterable[str] = DEFAULT_TCB_STATUSES,
) -> dict[str, object]:
    """A validated ``ppml-reference-values/1`` document."""
    enclaves = _unique(_measurement(v, "MRENCLAVE") for v in mrenclave)
    signers = _unique(_measurement(v, "MRSIGNER") for v in mrsigner)
    if not enclaves or not signers:
        raise ReferenceValuesError("at least one MRENCLAVE and one MRSIGNER are required")
    for name, value in (("isv_prod_id", isv_prod_id), ("min_isv_svn", min_isv_svn)):
        if not 0 <= value <= 0xFFFF:
            raise ReferenceValuesError(f"{name} must be 0..65535, got {value}")
    statuses = _unique(allowed_tcb_statuses)
    unknown = [s for s in statuses if s not in KNOWN_TCB_STATUSES]
    if unknown:
        raise ReferenceValuesError(
            f"unknown TCB status {unknown[0]!r} (choose from "
            f"{', '.join(sorted(KNOWN_TCB_STATUSES))}; Revoked is never allowed)"
        )
    if not statuses:
        raise ReferenceValuesError("at least one TCB status must be allowed")
    return {
        "schema": SCHEMA,
        "tee": "sgx",
        "mrenclave": enclaves,
        "mrsigner": signers,
        "isv_prod_id": isv_prod_id,
        "min_isv_svn": min_isv_svn,
        "allowed_tcb_statuses": statuses,
    }


def load(path: str | os.PathLike[str]) -> dict[str, object]:
    """Read and re-validate a reference-values file."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReferenceValuesError(f"cannot read reference values {path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or doc.get("tee") != "sgx":
        raise ReferenceValuesError(f"{path} is not a {SCHEMA} file for tee 'sgx'")
    try:
        return reference_values(
            mrenclave=doc["mrenclave"],
            mrsigner=doc["mrsigner"],
            isv_prod_id=doc["isv_prod_id"],
            min_isv_svn=doc["min_isv_svn"],
            allowed_tcb_statuses=doc["allowed_tcb_statuses"],
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ReferenceValuesError(f"{path} is missing or mistypes a field: {exc}") from None


def merge(old: dict[str, object], new: dict[str, object]) -> dict[str, object]:
    """``new`` with ``old``'s measurements kept, for a rolling upgrade.

    Both builds stay acceptable, so ``min_isv_svn`` is the lower of the two; write a
    fresh file (no ``--append``) to retire old builds. Product ids must agree.
    """
    if old["isv_prod_id"] != new["isv_prod_id"]:
        raise ReferenceValuesError(
            f"cannot append: existing file pins ISVPRODID {old['isv_prod_id']}, "
            f"this build has {new['isv_prod_id']}"
        )
    return reference_values(
        mrenclave=[*old["mrenclave"], *new["mrenclave"]],  # type: ignore[misc]
        mrsigner=[*old["mrsigner"], *new["mrsigner"]],  # type: ignore[misc]
        isv_prod_id=int(new["isv_prod_id"]),  # type: ignore[call-overload]
        min_isv_svn=min(int(old["min_isv_svn"]), int(new["min_isv_svn"])),  # type: ignore[call-overload]
        allowed_tcb_statuses=new["allowed_tcb_statuses"],  # type: ignore[arg-type]
    )


def write(doc: dict[str, object], path: str | os.PathLike[str]) -> None:
    """Write atomically, so a verifier never reads half a file."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, target)
