"""One exception base for the attestation layer.

Callers that only need "the evidence or its inputs were unusable" catch
:class:`AttestationError`; the specific classes keep their historical bases
(``ValueError``/``RuntimeError``) so existing ``except`` clauses still match.
Verification itself never raises for bad evidence: it returns a red result.
"""

from __future__ import annotations

from ppml_kernel.errors import PPMLError


class AttestationError(PPMLError):
    """Attestation input could not be used (a quote, collateral or policy is bad)."""


class QuoteParseError(AttestationError, ValueError):
    """The bytes are not a DCAP quote this project understands."""


class CollateralError(AttestationError, RuntimeError):
    """Collateral could not be obtained or is malformed (says which and where)."""


class PolicyError(AttestationError, ValueError):
    """A policy file or value is invalid (names the field)."""


class TrustAnchorError(AttestationError, RuntimeError):
    """A pinned root is damaged (the installation is broken: verify nothing)."""
