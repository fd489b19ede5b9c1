"""tests/data/tamper-vectors.json still records what the installed dcap-qvl says.

The TypeScript verifier is tested against these verdicts; this test makes sure the
verdicts themselves are dcap-qvl's (regenerate with tests/tools/make_tamper_vectors.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

import make_tamper_vectors as mtv  # noqa: E402

DATA = json.loads((Path(__file__).parents[1] / "data" / "tamper-vectors.json").read_text())
ROOT_DER = bytes.fromhex(DATA["synthetic_root_der"])


def test_file_covers_every_vector_with_collateral() -> None:
    manifest = json.loads((mtv.VECTORS / "MANIFEST.json").read_text())
    covered = {c["base"]["vector"] for c in DATA["cases"] if "vector" in c["base"]}
    assert covered == {v["quote"] for v in manifest if "collateral" in v}
    assert sum("status" in c["expected"] for c in DATA["cases"]) >= 50
    assert sum("error" in c["expected"] for c in DATA["cases"]) >= 300


@pytest.mark.parametrize("case", DATA["cases"], ids=lambda c: c["id"])
def test_recorded_verdict_is_dcap_qvls(case: dict) -> None:
    got = mtv.verdict_for(case, DATA["synthetic_bases"], ROOT_DER)
    if "error" in case["expected"]:
        assert "error" in got, f"dcap-qvl now accepts {case['id']}: {got}"
    else:
        assert got == case["expected"]
