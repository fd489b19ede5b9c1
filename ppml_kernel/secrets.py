"""Secrets in kernel memory only.

Values arrive through the browser-verified channel (``%ppml secret``, the
"Send a secret" command, ``getpass.getpass()`` in a PPML kernel). They are never
written to disk, logged, echoed or put into IPython history by this package; their
``repr`` hides them, so displaying a :class:`Secret` or the store shows names only.
What user code does with :func:`get`'s return value is up to the user.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ppml_kernel._named import NamedValues

_HIDDEN = "<hidden>"


@dataclass(frozen=True)
class Secret:
    """A named secret whose value does not show up in reprs, tracebacks' locals or listings."""

    name: str
    _value: str = field(repr=False)
    source: str = "browser"
    received: float = field(default_factory=time.time)

    def reveal(self) -> str:
        """The value, for the code that needs it (a password argument, a key)."""
        return self._value

    def __str__(self) -> str:
        return _HIDDEN

    def __repr__(self) -> str:
        return f"Secret(name={self.name!r}, value={_HIDDEN}, source={self.source!r})"

    def __reduce__(self) -> object:
        raise TypeError("secrets cannot be pickled (they stay in kernel memory)")


class BrowserSecretStore(NamedValues[Secret]):
    """Name -> :class:`Secret` (text sent through the browser channel), thread-safe.

    Not the store of key bytes (that is :class:`ppml_kernel.keys.store.KeyStore`); the
    kernel's key store looks key ids up here too, so a key can be sent as a secret.
    The control thread writes, cells read.
    """

    def put(self, name: str, value: str, source: str = "browser") -> Secret:
        item = Secret(name, value, source)
        self._set(name, item)
        return item

    def secret(self, name: str) -> Secret:
        item = self._lookup(name)
        if item is None:
            known = ", ".join(self.names()) or "none yet"
            raise KeyError(f"no secret named {name!r} (known: {known}); use %ppml secret {name}")
        return item

    def get(self, name: str) -> str:
        return self.secret(name).reveal()


STORE = BrowserSecretStore()
"""The kernel's store (one per kernel process)."""


def browser_store() -> BrowserSecretStore:
    """The kernel's store (a function, so the key store always reads the current one)."""
    return STORE


def get(name: str) -> str:
    """The value of secret ``name`` (KeyError with a hint if it was never sent)."""
    return STORE.get(name)


def secret(name: str) -> Secret:
    return STORE.secret(name)


def names() -> list[str]:
    return STORE.names()
