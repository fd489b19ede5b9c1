"""Browser <-> enclave channel, protocol ``ppml-attest/1`` (see docs/protocol.md).

``crypto`` (binding, key schedule, sealed frames), ``protocol`` (message schemas),
``session`` (kernel side of one session), ``manager`` (all sessions of a kernel and
the blocking secret request), ``jupyter`` (comm + control-channel wiring),
``client`` (the browser side in Python: reference and test client).
"""

from ppml_kernel.channel.crypto import PROTOCOL, ChannelCryptoError
from ppml_kernel.channel.manager import (
    ChannelError,
    ChannelManager,
    NoVerifiedSession,
    SecretDeclined,
    SecretTimeout,
)
from ppml_kernel.channel.protocol import TARGET_NAME, ProtocolError

__all__ = [
    "PROTOCOL",
    "TARGET_NAME",
    "ChannelCryptoError",
    "ChannelError",
    "ChannelManager",
    "NoVerifiedSession",
    "ProtocolError",
    "SecretDeclined",
    "SecretTimeout",
]
