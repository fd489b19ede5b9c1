"""The ``%ppml`` line and cell magic and its subcommands.

Feature modules each expose ``SUBCOMMANDS``; they are imported on the first
``%ppml`` call, not at kernel start.
"""

from __future__ import annotations

from typing import Any

SUBCOMMAND_MODULES: tuple[str, ...] = (
    "ppml_kernel.magics.attest",
    "ppml_kernel.magics.secret",
    "ppml_kernel.magics.data",
    "ppml_kernel.magics.spark",
)


def load_ipython_extension(shell: Any) -> None:
    """Register ``%ppml`` (also usable as ``%load_ext ppml_kernel.magics`` in stock IPython)."""
    from ppml_kernel.magics.ppml import PPMLMagics
    from ppml_kernel.magics.spark import install_session_names
    from ppml_kernel.spark.progress import install as install_progress

    shell.register_magics(PPMLMagics)
    if getattr(shell, "events", None) is not None:  # a real IPython shell
        install_progress(shell)  # live Spark job progress under running cells
        install_session_names(shell)  # `spark` and `sc`, as in pyspark's shell
