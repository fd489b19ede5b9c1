"""Key names and, later, key handling shared by the dataset layer and the Spark cluster.

This package sits below ``data`` and ``spark`` (both import it) and may import only
``attestation`` and ``tee``, so one rule for a thing used on both sides lives here once.
"""

from ppml_kernel.keys.ids import KEY_ID_CHARS, KEY_ID_MAX, KeyIdError, check_key_id, is_key_id

__all__ = ["KEY_ID_CHARS", "KEY_ID_MAX", "KeyIdError", "check_key_id", "is_key_id"]
