"""The occlum package's exception base: an Occlum instance, its config or launch is wrong.

A :class:`~ppml_kernel.errors.PPMLError`, so ``ppml-kernel occlum`` and the provisioner
report one line; subclasses keep ``ValueError`` as their builtin base.
"""

from __future__ import annotations

from ppml_kernel.errors import PPMLError


class OcclumError(PPMLError):
    """Base of every error the occlum package raises on purpose."""
