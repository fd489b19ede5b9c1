"""The channel layer's exception base: the attested browser/client channel refused or failed.

A :class:`~ppml_kernel.errors.PPMLError` (one line for the user); each subclass also keeps
the builtin base it had (``ValueError`` for malformed input, ``RuntimeError`` for a failed
exchange), so existing ``except ValueError`` handlers still see them. Messages never hold
a secret or key material: they reach the browser, notebooks and logs. (The AEAD/ECDH
primitives themselves are the base module :mod:`ppml_kernel.crypto`, below every layer.)
"""

from __future__ import annotations

from ppml_kernel.errors import PPMLError


class AttestedChannelError(PPMLError):
    """Base of every error the channel layer raises on purpose."""
