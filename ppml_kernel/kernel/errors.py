"""The kernel package's exception base: the kernel or its kernelspec cannot be set up.

A :class:`~ppml_kernel.errors.PPMLError` (one line for the user); subclasses keep their
builtin base (``ValueError`` for a bad choice), so ``except ValueError`` still works.
"""

from __future__ import annotations

from ppml_kernel.errors import PPMLError


class KernelError(PPMLError):
    """Base of every error the kernel package raises on purpose."""


class KernelSpecError(KernelError, ValueError):
    """A kernelspec cannot be written as asked (unknown TEE kind, bad name)."""
