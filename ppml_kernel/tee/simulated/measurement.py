"""The simulated enclave's default MRENCLAVE: a hash of ppml-kernel's own code.

A real MRENCLAVE measures the code loaded into the enclave. The simulator's
stand-in measures the ``ppml_kernel`` package's Python source, so changed code
gives another measurement and a pinned-MRENCLAVE policy notices it, as it would
on hardware.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import ppml_kernel


def package_root() -> Path:
    return Path(ppml_kernel.__file__).resolve().parent


@functools.lru_cache(maxsize=1)
def package_measurement() -> bytes:
    """SHA-256 over every ``*.py`` under the package, in sorted relative-path order.

    Per file: ``relative POSIX path || 0x00 || len(content) as u64 big-endian ||
    content``. The length makes the encoding unambiguous. Cached per process.
    """
    root = package_root()
    files = sorted(
        (path.relative_to(root).as_posix(), path)
        for path in root.rglob("*.py")
        if "__pycache__" not in path.parts and path.is_file()
    )
    digest = hashlib.sha256()
    for relative, path in files:
        content = path.read_bytes()
        digest.update(relative.encode() + b"\0" + len(content).to_bytes(8, "big"))
        digest.update(content)
    return digest.digest()
