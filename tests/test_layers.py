"""No module imports a layer above its own (docs/architecture.md has the picture).

Every module under ``ppml_kernel/`` is parsed with :mod:`ast` (nothing is imported), mapped
to its layer, and every import it makes is checked: top-level and lazy ones inside
functions, ``if TYPE_CHECKING:`` ones, and module names written as strings
(``importlib.import_module("ppml_kernel.x")``, and a string that names a module
exactly in a table: lazy exports, subcommand lists, ``"module:attr"`` entry-point style
tables; not a logger's name passed to ``getLogger``). The checker itself is tested on a
synthetic tree below, so this file fails on a deliberately added upward import.

Layers, low to high (a layer may import itself and everything below it):

    base        ppml_kernel/*.py (errors, _lazy, _named, crypto, b64, secrets, the root)
                and jvm/ (Java sources and the jar builder; imports nothing of ours)
    tee         produce evidence
    attestation verify evidence (imports tee: the simulated PKI's public parts)
    keys        key providers, store, registry, brokers, Parquet encryption's KMS glue
    channel     browser <-> enclave crypto        } both above keys, neither imports
    data        dataset format, readers, writers  } the other
    spark       sessions, clusters (above data: it reads datasets through data; data
                reaches spark's key source only through the ppml_kernel.key_sources
                entry point, never by import)
    surface     kernel + magics (+ __main__): what Jupyter talks to
    clients     cli, occlum (with the kernel provisioner): drive kernels from outside

labextension is not Python. A new subpackage or a top-level module that is not base
must be placed in ``LAYER_OF`` below, or this test fails: placement is a decision.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "ppml_kernel"

#: layer -> the layers directly below it (imports may go to these and, transitively, theirs)
BELOW: dict[str, tuple[str, ...]] = {
    "base": (),
    "tee": ("base",),
    "attestation": ("tee",),
    "keys": ("attestation",),
    "channel": ("keys",),
    "data": ("keys",),
    "spark": ("data",),
    "surface": ("channel", "spark"),
    "clients": ("surface",),
}

#: first name under ppml_kernel (a subpackage or a top-level module) -> layer;
#: any other top-level module is base
LAYER_OF: dict[str, str] = {
    "jvm": "base",
    "tee": "tee",
    "attestation": "attestation",
    "keys": "keys",
    "channel": "channel",
    "data": "data",
    "spark": "spark",
    "kernel": "surface",
    "magics": "surface",
    "__main__": "surface",
    "cli": "clients",
    "occlum": "clients",
}

#: Upward imports the parallel keys/ and attestation/ refactors remove. The lead empties
#: this list at merge; an entry that is no longer a violation fails the test too.
KNOWN: set[tuple[str, str]] = set()

_MODULE_STRING = re.compile(rf"^{PACKAGE}(\.[A-Za-z_]\w*)+(:[\w.]+)?$")
_IMPORT_FUNCS = {"import_module", "__import__"}


@dataclass(frozen=True)
class Import:
    """``importer`` (a module) imports ``target`` (a module) at ``line``; ``how`` says how."""

    importer: str
    target: str
    line: int
    how: str


def modules(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Every module under ``root/package`` by dotted name (packages by their own name)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` (maybe ``module.attr``) starts with."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def _from_base(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(module: str, path: Path, known: dict[str, Path],
               package: str = PACKAGE) -> list[Import]:
    """Every import of a module of ``package`` that ``module`` makes, anywhere in its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []

    def add(name: str, line: int, how: str) -> None:
        if name != package and not name.startswith(package + "."):
            return
        target = _resolve(name, known) if how != "string" else (name if name in known else None)
        imp = Import(module, target or "", line, how)
        if target is not None and target != module and imp not in found:
            found.append(imp)

    # a string argument of a call is a module name only for import_module (counted once
    # there); elsewhere it is a logger's or an entry-point group's name
    call_args = {id(a) for c in ast.walk(tree) if isinstance(c, ast.Call) for a in c.args}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno, "import")
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(module, path, node)
            for alias in node.names:  # ``from pkg import submodule`` imports the submodule
                add(f"{base}.{alias.name}" if alias.name != "*" else base, node.lineno, "from")
        elif isinstance(node, ast.Call):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if fname in _IMPORT_FUNCS and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                add(node.args[0].value, node.lineno, "import_module")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and _MODULE_STRING.match(node.value) and id(node) not in call_args:
            add(node.value.split(":")[0], node.lineno, "string")
    return found


def layer_of(module: str, package: str = PACKAGE,
             subpackages: frozenset[str] = frozenset()) -> str | None:
    """The layer of a dotted module name; None for a subpackage nobody placed yet.

    ``subpackages``: first-level names that are packages (a directory), not modules.
    """
    parts = module.split(".")
    if parts[0] != package:
        raise ValueError(f"{module} is not under {package}")
    if len(parts) == 1:
        return "base"  # the package root: version constants only
    first = parts[1]
    if first in LAYER_OF:
        return LAYER_OF[first]
    is_top_level_module = len(parts) == 2 and first not in subpackages
    return "base" if is_top_level_module else None


def allowed(layer: str) -> set[str]:
    """``layer`` and every layer below it."""
    out = {layer}
    for lower in BELOW[layer]:
        out |= allowed(lower)
    return out


def check(root: Path, package: str = PACKAGE) -> tuple[list[Import], list[str]]:
    """(upward imports, modules in no layer) for the tree at ``root``."""
    known = modules(root, package)
    subpackages = frozenset(m.split(".")[1] for m, p in known.items()
                            if p.name == "__init__.py" and m.count(".") == 1)
    upward, unplaced = [], []
    for module, path in known.items():
        if package == PACKAGE and ".labextension" in module:
            continue
        layer = layer_of(module, package, subpackages)
        if layer is None:
            unplaced.append(module)
            continue
        for imp in imports_of(module, path, known, package):
            target_layer = layer_of(imp.target, package, subpackages)
            if target_layer is None or target_layer not in allowed(layer):
                upward.append(imp)
    return upward, sorted(set(unplaced))


def _describe(imp: Import) -> str:
    return (f"{imp.importer} ({layer_of(imp.importer)}) imports {imp.target} "
            f"({layer_of(imp.target)}) at line {imp.line} [{imp.how}]")


# --------------------------------------------------------------------------- the real tree


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward, unplaced = check(ROOT)
    assert not unplaced, f"place these in LAYER_OF (tests/test_layers.py): {unplaced}"
    new = [i for i in upward if (i.importer, i.target) not in KNOWN]
    assert not new, "upward imports:\n" + "\n".join(map(_describe, new))
    stale = KNOWN - {(i.importer, i.target) for i in upward}
    assert not stale, f"fixed, remove from KNOWN: {sorted(stale)}"


def test_every_layer_is_reachable_and_the_order_has_no_cycle() -> None:
    for layer in BELOW:
        assert layer in allowed("clients")
    assert "spark" not in allowed("data") and "data" in allowed("spark")
    assert not allowed("channel") & {"data", "spark"}
    assert not allowed("data") & {"channel"}


# --------------------------------------------------------------------------- the checker


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / PACKAGE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


_CLEAN = {
    "__init__.py": "__version__ = '0'\n",
    "errors.py": "class PPMLError(Exception):\n    pass\n",
    "tee/__init__.py": "",
    "tee/base.py": "from ppml_kernel.errors import PPMLError\n",
    "attestation/__init__.py": "",
    "attestation/verify.py": "from ..tee import base\nfrom ppml_kernel import errors\n",
    "channel/__init__.py": "",
    "channel/session.py": "import ppml_kernel.attestation.verify\n",
    "data/__init__.py": "",
    "data/format.py": "from . import __name__ as _n\n",
    "spark/__init__.py": "",
    "spark/io.py": "from ppml_kernel.data.format import _n\n",
    "kernel/__init__.py": "",
    "kernel/kernel.py": "def f():\n    from ppml_kernel.channel import session\n",
    "magics/__init__.py": "MODULES = ('ppml_kernel.kernel.kernel',)\n",
    "cli/__init__.py": "from ppml_kernel.magics import MODULES\n",
}


def test_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    upward, unplaced = check(_tree(tmp_path, _CLEAN))
    assert upward == [] and unplaced == []


@pytest.mark.parametrize(("rel", "source", "target", "how"), [
    ("tee/base.py", "from ppml_kernel.attestation import verify\n",
     "ppml_kernel.attestation.verify", "from"),
    ("tee/base.py", "from ..attestation.verify import x\n", "ppml_kernel.attestation.verify",
     "from"),
    ("attestation/verify.py", "import ppml_kernel.channel.session as s\n",
     "ppml_kernel.channel.session", "import"),
    ("data/format.py", "def lazy():\n    from ppml_kernel.spark import io\n",
     "ppml_kernel.spark.io", "from"),
    ("channel/session.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
     "    from ppml_kernel.data.format import X\n", "ppml_kernel.data.format", "from"),
    ("data/format.py", "from importlib import import_module\n"
     "def f():\n    return import_module('ppml_kernel.channel.session')\n",
     "ppml_kernel.channel.session", "import_module"),
    ("tee/base.py", "import importlib\nM = importlib.import_module('ppml_kernel.kernel')\n",
     "ppml_kernel.kernel", "import_module"),
    ("tee/base.py", "BUILTIN = {'x': 'ppml_kernel.magics:load'}\n", "ppml_kernel.magics",
     "string"),
    ("errors.py", "from ppml_kernel.tee.base import Attester\n", "ppml_kernel.tee.base", "from"),
    ("kernel/kernel.py", "from ppml_kernel.cli import main\n", "ppml_kernel.cli", "from"),
])
def test_checker_catches_an_upward_import(tmp_path: Path, rel: str, source: str, target: str,
                                          how: str) -> None:
    files = dict(_CLEAN)
    files[rel] = source
    upward, _ = check(_tree(tmp_path, files))
    assert [(i.importer, i.target, i.how) for i in upward] == [
        (f"{PACKAGE}.{rel.removesuffix('.py').replace('/', '.')}", target, how)]


def test_checker_reports_an_unplaced_subpackage(tmp_path: Path) -> None:
    files = {**_CLEAN, "newthing/__init__.py": "", "newthing/core.py": ""}
    _, unplaced = check(_tree(tmp_path, files))
    assert unplaced == ["ppml_kernel.newthing", "ppml_kernel.newthing.core"]


def test_a_new_top_level_module_is_base_and_may_import_only_base(tmp_path: Path) -> None:
    files = {**_CLEAN, "crypto.py": "from ppml_kernel.errors import PPMLError\n"}
    assert check(_tree(tmp_path, files)) == ([], [])
    (tmp_path / PACKAGE / "crypto.py").write_text("from ppml_kernel.channel import session\n")
    upward, _ = check(tmp_path)
    assert [(i.importer, i.target) for i in upward] == [
        ("ppml_kernel.crypto", "ppml_kernel.channel.session")]


def test_a_logger_name_is_not_an_import(tmp_path: Path) -> None:
    files = {**_CLEAN, "tee/base.py": "import logging\nLOG = logging.getLogger('ppml_kernel.cli')\n"
             "GROUP = 'ppml_kernel.attesters'\n"}
    assert check(_tree(tmp_path, files)) == ([], [])
