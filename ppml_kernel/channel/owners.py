"""Who may talk to this kernel: the owner keys it has accepted (docs/protocol.md, 5.1).

A fresh kernel process has no owner. The first verified session that proves an owner
key (a signature over its transcript) claims it; from then on only sessions proving one
of the accepted keys become ready. Owners add other owners with signed grants. The
digest of the list goes into every quote's REPORT_DATA, so a browser sees in verified
evidence who controls the kernel before it sends anything.

Thread-safe: the control thread (handshakes) and the shell thread (status) both read it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ppml_kernel.channel import crypto
from ppml_kernel.channel.protocol import MAX_OWNERS, ProtocolError


@dataclass(frozen=True)
class Owner:
    """One accepted owner key (public facts only)."""

    key: bytes
    label: str
    granted_by: str  # "claim" or the fingerprint of the granting owner
    since: float

    @property
    def fingerprint(self) -> str:
        return crypto.owner_fingerprint(self.key)

    def describe(self) -> dict[str, object]:
        return {
            "fingerprint": self.fingerprint,
            "label": self.label,
            "granted_by": self.granted_by,
            "since": self.since,
        }


class OwnerRegistry:
    """The ordered list of owner keys; only ever grows within one kernel process."""

    def __init__(self) -> None:
        self._owners: list[Owner] = []
        self._lock = threading.Lock()

    def keys(self) -> list[bytes]:
        with self._lock:
            return [o.key for o in self._owners]

    def digest(self) -> bytes:
        return crypto.owners_digest(self.keys())

    def owners(self) -> list[Owner]:
        with self._lock:
            return list(self._owners)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return any(o.key == key for o in self._owners)

    def __len__(self) -> int:
        with self._lock:
            return len(self._owners)

    def authorize(self, owner_pub: bytes, digest_at_evidence: bytes) -> bool:
        """Admit a session whose owner proof verified; return True if it just claimed.

        Claiming needs the kernel to be unowned now *and* when the evidence was made
        (a claim that raced another one loses). Raises ``ProtocolError('not_owner')``
        for any key that is not an owner; nothing changes then.
        """
        with self._lock:
            if any(o.key == owner_pub for o in self._owners):
                return False
            if not self._owners and digest_at_evidence == crypto.NO_OWNER:
                self._owners.append(Owner(owner_pub, "owner", "claim", time.time()))
                return True
        raise ProtocolError(
            "not_owner",
            "another party controls this kernel: its owner key is not this browser's "
            "(restart the kernel to start a new, unowned process)",
        )

    def grant(self, granter: bytes, new_owner: bytes, label: str) -> bool:
        """Add ``new_owner`` on behalf of owner ``granter``; False if it was already one."""
        with self._lock:
            if not any(o.key == granter for o in self._owners):
                raise ProtocolError("not_owner", "only an owner can grant access")
            if any(o.key == new_owner for o in self._owners):
                return False
            if len(self._owners) >= MAX_OWNERS:
                raise ProtocolError("malformed", f"a kernel has at most {MAX_OWNERS} owners")
            fingerprint = crypto.owner_fingerprint(granter)
            self._owners.append(Owner(new_owner, label, fingerprint, time.time()))
            return True

    def describe(self) -> list[dict[str, object]]:
        return [o.describe() for o in self.owners()]
