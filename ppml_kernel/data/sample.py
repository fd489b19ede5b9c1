"""A synthetic loan-default dataset: for the ML notebook, its tests and the ML benchmark.

Generated (not shipped) so that any size is available and nothing real is in the
repository; the label follows a known logistic model plus noise, so a classifier has
something to find and the notebook's numbers are stable for a given seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

FEATURES = ["age", "income", "debt_ratio", "credit_lines", "late_payments", "years_employed"]
LABEL = "defaulted"
DDL = ("age int, income double, debt_ratio double, credit_lines int, late_payments int, "
       "years_employed double, defaulted int")


def loans(n: int, seed: int = 7) -> pd.DataFrame:
    """``n`` loan applications with a ``defaulted`` label (about a third positive)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    age = rng.integers(21, 75, n)
    income = np.round(rng.lognormal(10.6, 0.45, n), 2)
    debt_ratio = np.round(rng.beta(2, 5, n), 4)
    credit_lines = rng.poisson(4, n)
    late = rng.poisson(0.6, n)
    years = np.round(np.minimum(rng.exponential(6, n), age - 18), 1)
    z = (-4.2 + 8.0 * debt_ratio + 1.8 * late - 1.0 * np.log(income / 40_000)
         - 0.1 * years - 0.03 * (age - 45) + 0.1 * credit_lines)
    p = 1 / (1 + np.exp(-z))
    label = (rng.random(n) < p).astype("int32")
    return pd.DataFrame({
        "age": age.astype("int32"), "income": income, "debt_ratio": debt_ratio,
        "credit_lines": credit_lines.astype("int32"), "late_payments": late.astype("int32"),
        "years_employed": years, LABEL: label,
    })
