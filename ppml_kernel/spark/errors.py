"""The spark package's exception base: a cluster session could not be set up or used.

Ours, not pyspark's: Spark's own errors are recognised by module in
:func:`ppml_kernel.errors.is_spark_error`. A :class:`~ppml_kernel.errors.PPMLError`, so
the magics show it as one line; subclasses keep their builtin base (``RuntimeError``).
"""

from __future__ import annotations

from ppml_kernel.errors import PPMLError


class SparkSessionError(PPMLError):
    """Base of every error the spark package raises on purpose."""
