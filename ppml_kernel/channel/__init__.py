"""Browser <-> enclave channel, protocol ``ppml-attest/1`` (see docs/protocol.md).

``crypto`` (binding, key schedule, sealed frames), ``protocol`` (message schemas),
``session`` (kernel side of one session), ``manager`` (all sessions of a kernel and
the blocking secret request), ``jupyter`` (comm + control-channel wiring),
``client`` (the browser side in Python: reference and test client).

The names below are imported on first access, so importing ``channel.jupyter`` at
kernel start does not load ``cryptography`` through this package.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOMES = {
    "PROTOCOL": "protocol",
    "TARGET_NAME": "protocol",
    "ProtocolError": "protocol",
    "ChannelCryptoError": "crypto",
    "ChannelError": "manager",
    "ChannelManager": "manager",
    "NoVerifiedSession": "manager",
    "SecretDeclined": "manager",
    "SecretTimeout": "manager",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)
