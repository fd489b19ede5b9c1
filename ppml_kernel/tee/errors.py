"""The tee layer's exception base: this machine's TEE could not produce evidence.

A :class:`~ppml_kernel.errors.PPMLError`, so a magic or command shows it as one line
(no device, a driver that refused, a missing simulated PKI are the user's to fix).
"""

from __future__ import annotations

from ppml_kernel.errors import PPMLError


class TEEError(PPMLError):
    """Base of every error the tee layer raises on purpose."""
