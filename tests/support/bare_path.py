"""A PATH on which ``java``, ``javac`` and ``node`` (and their kin) cannot be found.

Every other program of the system's PATH stays reachable (Spark's launch scripts need
bash, coreutils, ps...), through symlinks in one fresh directory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

HIDDEN = {"java", "javac", "jar", "jshell", "keytool", "jps", "jstack", "jcmd", "node",
          "nodejs", "npm", "npx", "corepack", "yarn", "jlpm"}


def bare_path(folder: Path, keep: tuple[str, ...] = ()) -> str:
    """Fill ``folder`` with links to the PATH's programs except :data:`HIDDEN`; return it.

    ``keep`` directories (e.g. a venv's bin) are put first, unchanged.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for directory in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep):
        if not directory or not os.path.isdir(directory) or directory in keep:
            continue
        for entry in os.scandir(directory):
            target = folder / entry.name
            if entry.name in HIDDEN or target.exists() or target.is_symlink():
                continue
            if entry.is_file() and os.access(entry.path, os.X_OK):
                target.symlink_to(entry.path)
    path = os.pathsep.join([*keep, str(folder)])
    for tool in ("java", "node", "javac"):
        found = shutil.which(tool, path=path)
        assert found is None or any(found.startswith(k) for k in keep), found
    return path
