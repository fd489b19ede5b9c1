"""A plain IPython kernel with the ppml-attest/1 channel over the test PKI.

Used by tests/test_channel_kernel.py and the browser end-to-end test until the
project's PPMLKernel wires the channel in; launched as a real kernel through
jupyter_client / jupyter lab. Environment:

- ``PPML_TEST_PKI_NOW``: fixed PKI time (default: now)
- ``PPML_TEST_PKI_DIR``: keep the PKI there, so a restarted kernel keeps its root
- ``PPML_TEST_MRENCLAVE``: the enclave's MRENCLAVE (hex), for policy tests

It also registers a minimal ``%ppml`` line magic over the subcommand modules it can
import (``ppml_kernel.magics.secret``), with a stand-in for the lead's registry when
that is not in this tree.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import types
from dataclasses import dataclass
from typing import Any

import dcap_synth  # tests/ is on PYTHONPATH (see the kernelspec the tests write)
from ipykernel.ipkernel import IPythonKernel
from ipykernel.kernelapp import IPKernelApp

from ppml_kernel.channel.jupyter import install


def _ensure_registry() -> None:
    try:
        import ppml_kernel.magics.registry  # noqa: F401
    except ImportError:
        shim = types.ModuleType("ppml_kernel.magics.registry")

        class MagicError(Exception):
            pass

        @dataclass(frozen=True)
        class Subcommand:
            name: str
            summary: str
            configure: Any
            run: Any
            cell: bool = False

        @dataclass
        class MagicContext:
            shell: Any
            kernel: Any
            cell: str | None = None

            def display(self, obj: object) -> None:
                from IPython.display import display

                display(obj)

        shim.MagicError = MagicError
        shim.Subcommand = Subcommand
        shim.MagicContext = MagicContext
        sys.modules["ppml_kernel.magics.registry"] = shim


def _register_ppml_magic(shell: Any, kernel: Any) -> None:
    _ensure_registry()
    from ppml_kernel.magics import secret
    from ppml_kernel.magics.registry import MagicContext, MagicError

    commands = {s.name: s for s in secret.SUBCOMMANDS}

    def ppml(line: str) -> object:
        words = shlex.split(line)
        if not words or words[0] not in commands:
            print(f"usage: %ppml {{{','.join(commands)}}} ...", file=sys.stderr)
            return None
        sub = commands[words[0]]
        parser = argparse.ArgumentParser(prog=f"%ppml {sub.name}", description=sub.summary)
        sub.configure(parser)
        try:
            args = parser.parse_args(words[1:])
        except SystemExit:
            return None
        try:
            return sub.run(MagicContext(shell=shell, kernel=kernel), args)
        except MagicError as exc:
            print(f"PPML: {exc}", file=sys.stderr)
            return None

    shell.register_magic_function(ppml, "line", "ppml")


class ChannelTestKernel(IPythonKernel):
    implementation = "ppml-channel-test"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        now = int(os.environ.get("PPML_TEST_PKI_NOW", "0")) or None
        pki_dir = os.environ.get("PPML_TEST_PKI_DIR")
        pki = dcap_synth.load_pki(pki_dir) if pki_dir else None
        if pki is None:
            pki = (
                dcap_synth.Pki(now=now)
                if now
                else dcap_synth.Pki(now=int(__import__("time").time()))
            )
            if pki_dir:
                dcap_synth.save_pki(pki, pki_dir)
        report = {}
        if os.environ.get("PPML_TEST_MRENCLAVE"):
            report["mrenclave"] = bytes.fromhex(os.environ["PPML_TEST_MRENCLAVE"])
        install(
            self,
            dcap_synth.SynthAttester(pki, report_kwargs=report),
            kernel_info={"implementation": "ppml-test"},
        )
        _register_ppml_magic(self.shell, self)


if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=ChannelTestKernel)
