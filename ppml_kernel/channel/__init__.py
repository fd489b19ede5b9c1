"""Browser <-> enclave channel, protocol ``ppml-attest/2`` (see docs/protocol.md).

``crypto`` (binding, key schedule, sealed frames), ``protocol`` (message schemas),
``session`` (kernel side of one session), ``manager`` (all sessions of a kernel and
the blocking secret request), ``jupyter`` (comm + control-channel wiring),
``client`` (the browser side in Python: reference and test client).

The names below are imported on first access, so importing ``channel.jupyter`` at
kernel start does not load ``cryptography`` through this package.
"""

from __future__ import annotations

from ppml_kernel._lazy import lazy_exports

_HOMES = {
    "PROTOCOL": "ppml_kernel.channel.protocol",
    "TARGET_NAME": "ppml_kernel.channel.protocol",
    "ProtocolError": "ppml_kernel.channel.protocol",
    "ChannelCryptoError": "ppml_kernel.channel.crypto",
    "ChannelError": "ppml_kernel.channel.manager",
    "ChannelManager": "ppml_kernel.channel.manager",
    "NoVerifiedSession": "ppml_kernel.channel.manager",
    "SecretDeclined": "ppml_kernel.channel.manager",
    "SecretTimeout": "ppml_kernel.channel.manager",
}

__all__ = sorted(_HOMES)
__getattr__ = lazy_exports(__name__, _HOMES)
