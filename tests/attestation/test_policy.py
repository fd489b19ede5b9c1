"""Policy: loading (with errors naming the field) and every check it makes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_vectors

from ppml_kernel.attestation import Policy, PolicyError, parse_quote
from ppml_kernel.attestation import policy as policy_module

SGX = parse_quote(next(v for v in load_vectors() if v.name == "dcap-qvl/sgx_quote").quote)
TDX = parse_quote(next(v for v in load_vectors() if v.name == "dcap-qvl/tdx_quote").quote)


def failed(policy: Policy, quote=SGX, status="UpToDate", advisories=(), simulated=False):
    return [c.name for c in policy.evaluate(quote, status, list(advisories), simulated) if not c.ok]


def test_default_policy_is_strict_about_platform_not_code():
    p = Policy()
    assert failed(p) == []
    assert failed(p, status="OutOfDate") == ["tcb_status"]
    assert failed(p, status="SWHardeningNeeded") == []
    assert failed(p, simulated=True) == ["simulation"]
    assert not p.allow_simulated


def test_measurement_allow_lists():
    assert failed(Policy(mrenclave=(SGX.mrenclave,), mrsigner=(SGX.mrsigner,))) == []
    assert failed(Policy(mrenclave=("00" * 32,))) == ["mrenclave"]
    assert failed(Policy(mrsigner=("11" * 32, "22" * 32))) == ["mrsigner"]
    assert failed(Policy(mrtd=(TDX.mr_td,)), quote=TDX) == []
    assert failed(Policy(mrtd=("00" * 48,)), quote=TDX) == ["mrtd"]
    assert failed(Policy(mrenclave=(SGX.mrenclave,)), quote=TDX) == ["tee"]


def test_product_id_and_minimum_svn():
    assert failed(Policy(isv_prod_id=0, min_isv_svn=0)) == []
    assert failed(Policy(isv_prod_id=7)) == ["isv_prod_id"]
    assert failed(Policy(min_isv_svn=1)) == ["isv_svn"]


def test_advisory_deny_list():
    p = Policy(denied_advisories=("INTEL-SA-00615",))
    assert failed(p, advisories=["INTEL-SA-00289"]) == []
    assert failed(p, advisories=["INTEL-SA-00289", "INTEL-SA-00615"]) == ["advisories"]


def test_debug_always_forbidden():
    from dataclasses import replace

    assert failed(Policy(), quote=replace(SGX, debug=True)) == ["debug"]


def test_load_policy_and_reference_values(tmp_path):
    f = tmp_path / "policy.json"
    f.write_text(
        json.dumps(
            {
                "mrenclave": [SGX.mrenclave],
                "min_isv_svn": 0,
                "allowed_tcb_statuses": ["UpToDate"],
                "allow_simulated": True,
            }
        )
    )
    p = Policy.load(f)
    assert p.mrenclave == (SGX.mrenclave,) and p.allow_simulated
    assert Policy.from_dict(p.to_dict()) == p
    ref = tmp_path / "reference-values.json"
    ref.write_text(
        json.dumps(
            {
                "schema": "ppml-reference-values/1",
                "tee": "sgx",
                "mrenclave": [SGX.mrenclave.upper()],
                "mrsigner": [SGX.mrsigner],
                "isv_prod_id": 0,
                "min_isv_svn": 0,
            }
        )
    )
    assert failed(Policy.load(ref)) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"mrenclave": ["zz"]}', "mrenclave[0]: must be 64 hex digits, got 'zz'"),
        ('{"mrenclave": ["00"]}', "mrenclave[0]: must be 64 hex digits"),
        ('{"min_isv_svn": -1}', "min_isv_svn: must be an integer"),
        ('{"allowed_tcb_statuses": ["Fine"]}', "unknown or forbidden status 'Fine'"),
        ('{"allow_simulated": "yes"}', "allow_simulated: must be true or false"),
        ('{"mrenclve": []}', "mrenclve: unknown key"),
        ('{"tee": "sgx", "tee": "tdx"}', "tee: duplicate key"),
        ("[1]", "must be a JSON object"),
        ("{", "not valid JSON"),
    ],
)
def test_bad_policy_files_name_file_and_field(tmp_path, content, message):
    f = tmp_path / "p.json"
    f.write_text(content)
    with pytest.raises(PolicyError, match=r"p\.json") as info:
        Policy.load(f)
    assert message in str(info.value)


def test_missing_policy_file_named(tmp_path):
    with pytest.raises(PolicyError, match=r"cannot read policy file .*nope\.json"):
        Policy.load(tmp_path / "nope.json")


# -- one format, one default, shared with the browser (issue 11 items 2, 3, 19) -----------
DATA = Path(__file__).parents[1] / "data"
CASES = json.loads((DATA / "reference-values" / "cases.json").read_text())["cases"]
SCHEMA = Path(__file__).parents[2] / "extensions" / "jupyterlab-ppml" / "schema" / "plugin.json"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_shared_reference_value_cases(case: dict) -> None:
    """The same file drives extensions/jupyterlab-ppml/test/policy.test.ts."""
    if "error" in case:
        with pytest.raises(PolicyError) as info:
            Policy.from_dict(case["input"])
        assert case["error"] in str(info.value)
    else:
        assert Policy.from_dict(case["input"]).to_dict() == case["policy"]


def test_default_policy_is_the_shared_file_and_the_browser_schema_default() -> None:
    shared = json.loads((Path(policy_module.__file__).with_name("default-policy.json")).read_text())
    assert Policy().to_dict() == shared == Policy.from_dict({}).to_dict()
    assert shared["allowed_tcb_statuses"] == ["UpToDate", "SWHardeningNeeded"]
    schema = json.loads(SCHEMA.read_text())
    assert schema["properties"]["policy"]["default"] == shared


def test_tee_kind_is_bound() -> None:
    """SGX pins never admit a TD, TDX pins never an enclave, a named kind admits only itself."""
    sgx_pinned = Policy.from_dict(
        {"tee": "sgx", "mrenclave": [SGX.mrenclave], "mrsigner": SGX.mrsigner}
    )
    assert failed(sgx_pinned) == []
    assert "tee" in failed(sgx_pinned, quote=TDX)
    assert "tee" in failed(Policy(isv_prod_id=0), quote=TDX)
    assert "tee" in failed(Policy(tee="tdx"))
    assert failed(Policy(tee="tdx"), quote=TDX) == []
    assert "tee" in failed(Policy(mrtd=(TDX.mr_td,)))
    with pytest.raises(PolicyError, match="tee"):
        Policy(tee="sgx", mrtd=(TDX.mr_td,))


def test_tdx_pins_rtmrs_mrconfigid_and_mrowner() -> None:
    assert len(TDX.rtmr) == 4 and TDX.mr_config_id and TDX.mr_owner
    exact = {
        "mrtd": TDX.mr_td, **{f"rtmr{i}": TDX.rtmr[i] for i in range(4)},
        "mrconfigid": TDX.mr_config_id, "mrowner": TDX.mr_owner,
    }
    assert failed(Policy.from_dict(exact), quote=TDX) == []
    for name in exact:
        other = "f" * 96 if exact[name] != "f" * 96 else "e" * 96
        assert failed(Policy.from_dict({**exact, name: [other]}), quote=TDX) == [name]
