"""Lazy package exports: a name is imported from its module on first access.

Packages use it so that importing them (at kernel start, in a Spark worker) does not
load ``cryptography``, pyspark or pyarrow before they are needed. Below every layer:
it imports nothing from ppml_kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any

#: export name -> "module" (same attribute name) or ("module", "attribute")
Table = Mapping[str, "str | tuple[str, str]"]


def lazy_exports(package: str, table: Table) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that resolves the names in ``table``."""

    def __getattr__(name: str) -> Any:
        target = table.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attr = (target, name) if isinstance(target, str) else target
        return getattr(import_module(module), attr)

    return __getattr__
