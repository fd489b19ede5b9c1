"""Produce attestation evidence inside a TEE.

One module per TEE kind behind the small :class:`~ppml_kernel.tee.base.Attester`
interface; :func:`get_attester` picks one by explicit choice or by detection.
"""

from ppml_kernel.tee.base import (
    REPORT_DATA_SIZE,
    Attester,
    AttesterError,
    AttesterUnavailable,
    check_report_data,
)
from ppml_kernel.tee.factory import (
    DETECTION_ORDER,
    ENV_VAR,
    attester_class,
    attester_kinds,
    detect_kind,
    get_attester,
)

__all__ = [
    "DETECTION_ORDER",
    "ENV_VAR",
    "REPORT_DATA_SIZE",
    "Attester",
    "AttesterError",
    "AttesterUnavailable",
    "attester_class",
    "attester_kinds",
    "check_report_data",
    "detect_kind",
    "get_attester",
]
