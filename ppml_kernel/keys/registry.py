"""Key providers by name: how code on a Spark executor gets a :class:`KeyProvider`.

Spark runs the ``ppml`` data source and its column functions in Python workers that
the JVM starts; they share nothing with the kernel's memory. A key must never travel
as a data source option (options show up in plans and the UI), an environment
variable, a command line or a log. So the data source asks for a provider by name
(the ``keysource`` option, else ``$PPML_KEYSOURCE``), on the executor itself:

* ``local`` (default): the kernel's local key broker (:mod:`ppml_kernel.keys.broker.local`),
  reached over a Unix socket that only descendants of the kernel process may use. The
  KEK never leaves the kernel process; workers get per-file data keys.
* ``keyfile``: KEKs from key files named by the ``keyfile`` option (paths, not keys),
  for the data owner's own Spark jobs and for tests.
* ``attested``: the attested cluster's key broker (:mod:`ppml_kernel.keys.broker.client`):
  the executor's enclave attests to the driver, which wraps and unwraps data keys.
* Anything registered with :func:`register_key_source` or through the entry-point
  group ``ppml_kernel.key_sources`` (where a new KMS plugs in).

A factory receives the data source options (lower-cased keys) and returns a provider;
providers are cached per process so a reused Python worker does not reconnect.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping

from ppml_kernel.keys.errors import DatasetKeyError
from ppml_kernel.keys.files import KeyFileProvider
from ppml_kernel.keys.provider import KeyProvider

KeySourceFactory = Callable[[Mapping[str, str]], KeyProvider]

OPTION = "keysource"
ENV_VAR = "PPML_KEYSOURCE"
DEFAULT = "local"
ENTRY_POINT_GROUP = "ppml_kernel.key_sources"

_lock = threading.Lock()
_factories: dict[str, KeySourceFactory] = {}
_cache: dict[tuple[str, tuple[tuple[str, str], ...]], KeyProvider] = {}
# Options that select *which* provider a source returns; others do not affect caching.
_IDENTITY_OPTIONS = ("keysource", "keyfile", "keybroker")


def register_key_source(name: str, factory: KeySourceFactory) -> None:
    """Make ``name`` usable as ``.option("keysource", name)`` in this process."""
    with _lock:
        _factories[name] = factory
        for key in [k for k in _cache if k[0] == name]:
            del _cache[key]


def _entry_point(name: str) -> KeySourceFactory | None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    return None


def key_source_name(options: Mapping[str, str]) -> str:
    return options.get(OPTION) or os.environ.get(ENV_VAR) or DEFAULT


def provider_for(options: Mapping[str, str]) -> KeyProvider:
    """The provider for these data source options, created once per process."""
    name = key_source_name(options)
    ident = tuple((k, options[k]) for k in _IDENTITY_OPTIONS if k in options)
    with _lock:
        cached = _cache.get((name, ident))
        factory = _factories.get(name)
    if cached is not None:
        return cached
    if factory is None:
        factory = _entry_point(name)
    if factory is None:
        raise DatasetKeyError(
            f"unknown key source {name!r}; known: {', '.join(sorted(known_key_sources()))}"
        )
    provider = factory(options)
    with _lock:
        _cache[(name, ident)] = provider
    return provider


def known_key_sources() -> list[str]:
    from importlib.metadata import entry_points

    names = set(_factories)
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def _keyfile_source(options: Mapping[str, str]) -> KeyProvider:
    paths = options.get("keyfile")
    if not paths:
        raise DatasetKeyError("key source 'keyfile' needs the option keyfile=<path of a key file>")
    return KeyFileProvider([p for p in paths.split(os.pathsep) if p])


def _local_source(options: Mapping[str, str]) -> KeyProvider:
    from ppml_kernel.keys.broker.local import BrokerClient

    return BrokerClient.discover(options.get("keybroker"))


def _attested_source(options: Mapping[str, str]) -> KeyProvider:
    from ppml_kernel.keys.broker.client import BrokerKeyProvider

    return BrokerKeyProvider()


register_key_source("keyfile", _keyfile_source)
register_key_source("local", _local_source)
register_key_source("attested", _attested_source)  # protocol.KEYSOURCE_NAME
