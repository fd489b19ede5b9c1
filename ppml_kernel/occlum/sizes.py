"""Memory sizes as Occlum.json spells them: an integer and a binary unit.

Occlum's ``gen_internal_conf`` accepts ``<integer><unit>`` with unit ``KB``, ``MB``,
``GB``, ``TB`` or ``B`` (powers of 1024, no fractions); anything else fails
``occlum build`` late and tersely, so sizes are checked and normalised here.
"""

from __future__ import annotations

import re

UNITS: tuple[tuple[str, int], ...] = (
    ("TB", 1024**4),
    ("GB", 1024**3),
    ("MB", 1024**2),
    ("KB", 1024),
    ("B", 1),
)
_ALIASES = {
    "T": "TB",
    "G": "GB",
    "M": "MB",
    "K": "KB",
    "TIB": "TB",
    "GIB": "GB",
    "MIB": "MB",
    "KIB": "KB",
}
_SIZE = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")
MiB = 1024**2
GiB = 1024**3


def parse_size(text: str | int) -> int:
    """Bytes in ``text`` (``"4GB"``, ``"512MB"``, ``"4g"``, ``"4GiB"``); units are binary."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"size must not be negative: {text}")
        return text
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (write e.g. 512MB or 4GB)")
    number, unit = int(match.group(1)), match.group(2).upper() or "B"
    unit = _ALIASES.get(unit, unit)
    factors = dict(UNITS)
    if unit not in factors:
        raise ValueError(f"unknown size unit in {text!r} (use KB, MB, GB or TB)")
    return number * factors[unit]


def format_size(size: int) -> str:
    """The largest exact Occlum unit: 4294967296 -> ``"4GB"``, 1536 MiB -> ``"1536MB"``."""
    if size < 0:
        raise ValueError(f"size must not be negative: {size}")
    for unit, factor in UNITS:
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return "0B"


def round_up(size: int, step: int) -> int:
    """``size`` rounded up to a multiple of ``step``."""
    return -(-size // step) * step
