"""Errors: one base per package, one place where a magic's error becomes one red line,
and every broad ``except`` left in the package says why it is a boundary.

The red line itself is checked end to end in a real kernel by test_spark_ux.py; here the
one place (:mod:`ppml_kernel.magics.errors`) is driven through IPython's own magic call.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from ppml_kernel.errors import PPMLError

PACKAGE = Path(__file__).resolve().parents[2] / "ppml_kernel"


# --------------------------------------------------------------------------- the one place


@pytest.fixture
def shell():
    from IPython.testing.globalipapp import get_ipython

    from ppml_kernel.magics.ppml import PPMLMagics

    ip = get_ipython()
    ip.register_magics(PPMLMagics)
    return ip


def _outputs(shell, line: str) -> list[dict]:
    from IPython.utils.capture import capture_output

    with capture_output() as cap:
        shell.run_line_magic("ppml", line)
    return [o.data for o in cap.outputs]


def test_a_magic_error_is_one_red_line_without_the_hint(shell) -> None:
    [out] = _outputs(shell, "no-such-subcommand")
    assert out["text/plain"].startswith("ppml: unknown subcommand 'no-such-subcommand'")
    assert "--verbose" not in out["text/plain"]  # the user's input: nothing more to see
    assert 'class="ppml-error"' in out["text/html"]


def test_a_lower_layers_expected_error_is_one_line_with_the_hint(shell, monkeypatch) -> None:
    from ppml_kernel.magics import ppml as dispatcher

    def fail(*args, **kwargs):
        raise PPMLError("the cluster is gone")

    monkeypatch.setattr(dispatcher, "run", fail)
    [out] = _outputs(shell, "status")
    assert out["text/plain"] == ("ppml: the cluster is gone "
                                 "(--verbose or %ppml debug on: full trace)")
    with pytest.raises(PPMLError, match="the cluster is gone"):  # --verbose: the full trace
        shell.run_line_magic("ppml", "status --verbose")


def test_a_bug_keeps_its_traceback(shell, monkeypatch) -> None:
    from ppml_kernel.magics import ppml as dispatcher

    def bug(*args, **kwargs):
        raise KeyError("not a user error")

    monkeypatch.setattr(dispatcher, "run", bug)
    with pytest.raises(KeyError):
        shell.run_line_magic("ppml", "status")


def test_debug_on_keeps_every_traceback(shell, monkeypatch) -> None:
    from ppml_kernel.magics.errors import STATE, MagicError

    monkeypatch.setattr(STATE, "debug", False)
    _outputs(shell, "debug on")
    assert STATE.debug
    with pytest.raises(MagicError, match="unknown subcommand"):
        shell.run_line_magic("ppml", "no-such-subcommand")
    _outputs(shell, "debug off")
    assert not STATE.debug


def test_an_interrupt_is_one_line(shell, monkeypatch) -> None:
    from ppml_kernel.magics import ppml as dispatcher

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dispatcher, "run", interrupted)
    assert [o["text/plain"] for o in _outputs(shell, "status")] == ["ppml: interrupted"]


def test_user_errors_turns_only_the_named_kinds_into_magic_errors() -> None:
    from ppml_kernel.magics.errors import MagicError, user_errors

    with pytest.raises(MagicError, match=r"^the driver: no TEE$") as info, \
            user_errors(LookupError, prefix="the driver: "):
        raise LookupError("no TEE")
    assert info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(TypeError), user_errors(LookupError):
        raise TypeError("a bug stays a bug")


# --------------------------------------------------------------------------- bases


#: Packages allowed without a PPMLError base, each with the reason (a listed package
#: that has its base fails the test).
KNOWN_WITHOUT_BASE: set[str] = {
    "jvm",  # raises nothing: no javac means no jar (None) and every reader keeps Python
}


def _has_ppml_base(package: str) -> bool:
    """Whether ``ppml_kernel.<package>.errors`` exists and holds a PPMLError subclass."""
    from importlib import import_module

    if not (PACKAGE / package / "errors.py").is_file():
        return False
    module = import_module(f"ppml_kernel.{package}.errors")
    return any(isinstance(v, type) and issubclass(v, PPMLError) and v is not PPMLError
               for v in vars(module).values())


def test_every_package_has_an_errors_module_with_a_ppml_error_base() -> None:
    packages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    assert {"attestation", "channel", "cli", "data", "kernel", "keys", "magics", "occlum",
            "spark", "tee"} <= set(packages)
    missing = [name for name in packages if not _has_ppml_base(name)]
    assert set(missing) == KNOWN_WITHOUT_BASE, missing


@pytest.mark.parametrize(("module", "name", "builtin"), [
    ("ppml_kernel.tee", "AttesterError", RuntimeError),
    ("ppml_kernel.channel.protocol", "ProtocolError", ValueError),
    ("ppml_kernel.channel.crypto", "ChannelCryptoError", ValueError),
    ("ppml_kernel.channel.manager", "ChannelError", RuntimeError),
    ("ppml_kernel.channel.atrest", "SealedNotebookError", ValueError),
    ("ppml_kernel.channel.sealed_client", "SealedClientError", RuntimeError),
    ("ppml_kernel.spark.connect", "ConnectError", RuntimeError),
    ("ppml_kernel.spark.localcluster", "ClusterError", RuntimeError),
    ("ppml_kernel.occlum.config", "OcclumConfigError", ValueError),
    ("ppml_kernel.occlum.launcher", "LaunchError", ValueError),
    ("ppml_kernel.occlum.reference", "ReferenceValuesError", ValueError),
    ("ppml_kernel.kernel.errors", "KernelSpecError", ValueError),
])
def test_errors_are_ppml_errors_and_keep_their_builtin_base(module, name, builtin) -> None:
    from importlib import import_module

    cls = getattr(import_module(module), name)
    assert issubclass(cls, PPMLError) and issubclass(cls, builtin)


# --------------------------------------------------------------------------- broad excepts


#: Files allowed a broad except without saying why: none (a listed file that has
#: none fails the test too).
KNOWN_UNCOMMENTED: set[str] = set()

_BROAD_NAMES = {"Exception", "BaseException"}
_WHY = re.compile(r"#.*\b(boundary|best-effort)\b", re.IGNORECASE)


def _is_broad(node: ast.expr | None) -> bool:
    if node is None:  # a bare ``except:``
        return True
    if isinstance(node, ast.Tuple):
        return any(_is_broad(e) for e in node.elts)
    return isinstance(node, ast.Name) and node.id in _BROAD_NAMES


def _broad_lines(path: Path) -> list[int]:
    """Lines of ``except Exception``-like handlers that swallow, and of ``suppress(Exception)``.

    A handler that cleans up and ends in a bare ``raise`` swallows nothing: not listed.
    """
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ExceptHandler) and _is_broad(node.type):
            last = node.body[-1]
            if not (isinstance(last, ast.Raise) and last.exc is None):
                lines.append(node.lineno)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(
                node.func, "id", "")) == "suppress" and any(_is_broad(a) for a in node.args):
            lines.append(node.lineno)
    return sorted(lines)


def _uncommented(path: Path) -> list[int]:
    text = path.read_text(encoding="utf-8").splitlines()
    bad = []
    for n in _broad_lines(path):
        line = text[n - 1]
        near = [text[j] for j in range(max(0, n - 4), min(len(text), n + 1))
                if text[j].lstrip().startswith("#")]  # just above, or first in the body
        if not (_WHY.search(line) or any(_WHY.search(a) for a in near)):
            bad.append(n)
    return bad


def test_every_broad_except_says_why_it_is_a_boundary() -> None:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        bad = _uncommented(path)
        if bad and rel not in KNOWN_UNCOMMENTED:
            found[rel] = bad
    assert not found, f"say why (# boundary: ... / # best-effort ...) or narrow: {found}"
    stale = {rel for rel in KNOWN_UNCOMMENTED
             if not (PACKAGE / rel).is_file() or not _uncommented(PACKAGE / rel)}
    assert not stale, f"fixed or moved, remove from KNOWN_UNCOMMENTED: {sorted(stale)}"


def test_the_broad_except_check_itself(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import contextlib\n"
        "try:\n    pass\nexcept Exception:\n    pass\n"                      # 4: swallows
        "try:\n    pass\nexcept Exception:  # boundary: a callback\n    pass\n"  # ok
        "try:\n    pass\n# best-effort probe\nexcept (OSError, Exception):\n    pass\n"
        "try:\n    pass\nexcept BaseException:\n    cleanup()\n    raise\n"  # re-raises
        "try:\n    pass\nexcept:\n    pass\n"                                 # 22: bare
        "with contextlib.suppress(Exception):\n    pass\n"                      # 24
        "try:\n    pass\nexcept ValueError:\n    pass\n"                      # narrow: ok
    )
    assert _uncommented(module) == [4, 22, 24]


def test_magics_have_no_broad_except_but_the_one_place() -> None:
    hits = {path.name: _broad_lines(path) for path in sorted((PACKAGE / "magics").glob("*.py"))}
    assert {name: lines for name, lines in hits.items() if lines} == {
        "errors.py": hits["errors.py"]}
    assert len(hits["errors.py"]) == 1
