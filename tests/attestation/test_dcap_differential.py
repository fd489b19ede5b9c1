"""Differential test: the browser verifier against dcap-qvl on fresh random collateral.

Each run makes a new test PKI (tests/support/dcap_synth.py) and a new random seed, mutates
signed TCB Info and QE Identity (numbers written as floats or out of range, duplicate
and missing keys, wrong types, dates in every RFC 3339 form and some that are not, UTC
offsets in and out of range, years before 1970, every TCB status on platform, QE and
TDX module levels; SGX and TDX quotes) and rebuilds the CRLs (validity windows around
now, revoked serials, wrong issuer or key), re-signs everything with the test PKI so
that only parsing and policy decide, asks dcap-qvl for its verdict, then runs the
extension's compiled verifier (test/differential.ts) over the same inputs. Verdict *and*
status (and advisories) must agree on every case. Counts and the seed are printed;
PPML_DIFF_SEED=<seed> replays a run, PPML_DIFF_CASES sets the number of cases.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import dcap_synth as s

from ppml_kernel.attestation.policy import KNOWN_TCB_STATUSES

ROOT = Path(__file__).resolve().parents[2]
EXTENSION = ROOT / "extensions" / "jupyterlab-ppml"
JLPM = Path(sys.executable).parent / "jlpm"
DAY = 86400
STATUSES = (*KNOWN_TCB_STATUSES, "Bogus", "uptodate")
CA_CN = "TEST SGX PCK Platform CA"


# --------------------------------------------------------------------------- JSON with holes
class Pairs(list):
    """A JSON object as a list of (key, value) pairs: keys may repeat."""


@dataclass
class Raw:
    """A JSON value written verbatim (number lexemes like 17.0, -0, 1e1)."""

    text: str


def load(text: str) -> Any:
    return json.loads(text, object_pairs_hook=Pairs)


def dump(value: Any, rng: random.Random, ws: float) -> str:
    """Serialize, with random JSON whitespace between tokens when ``ws`` > 0."""

    def sp() -> str:
        return rng.choice([" ", "\t", "\n", "\r\n  "]) if ws and rng.random() < ws else ""

    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Pairs):
        body = ",".join(f"{sp()}{json.dumps(k)}{sp()}:{sp()}{dump(v, rng, ws)}" for k, v in value)
        return "{" + body + sp() + "}"
    if isinstance(value, list):
        return "[" + ",".join(sp() + dump(v, rng, ws) for v in value) + sp() + "]"
    return json.dumps(value)


def objects(value: Any, out: list[Pairs] | None = None) -> list[Pairs]:
    """Every object in the tree (depth first)."""
    out = [] if out is None else out
    if isinstance(value, Pairs):
        out.append(value)
        for _, v in value:
            objects(v, out)
    elif isinstance(value, list):
        for v in value:
            objects(v, out)
    return out


def leaves(value: Any, want: Callable[[str, Any], bool]) -> list[tuple[Pairs, int]]:
    """(object, index) of every member whose key and value satisfy ``want``."""
    return [(o, i) for o in objects(value) for i, (k, v) in enumerate(o) if want(k, v)]


# --------------------------------------------------------------------------- random values
def number_lexeme(rng: random.Random, current: int) -> str:
    return rng.choice(
        [
            str(rng.choice([0, 1, 2, 5, 8, 13, 17, 255, 256, 65535, 65536, 2**32 - 1, 2**32])),
            str(-rng.choice([1, 5, 256])),
            f"{current}.0",
            f"{current}e0",
            f"{current}E+0",
            f"{current}.5",
            "-0",
            f"0{current}",
            f"{current * 10}e-1",
            str(current + rng.choice([-1, 1])),
            str(2**64),
        ]
    )


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 2 else 6)
    if kind == 0:
        return Raw(number_lexeme(rng, rng.randrange(300)))
    if kind == 1:
        return rng.choice(["", "5", "UpToDate", "Revoked", "00906ED50000", "2026-01-01T00:00:00Z"])
    if kind == 2:
        return None
    if kind == 3:
        return rng.choice([True, False])
    if kind == 4:
        return rng.randrange(20)
    if kind == 5:
        return rng.choice(["INTEL-SA-00615", "x"])
    if kind == 6:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    return Pairs((f"x{rng.randrange(1000)}", random_value(rng, depth + 1)) for _ in range(2))


def random_date(rng: random.Random, now: int) -> str:
    """RFC 3339 in the forms chrono accepts, and near misses it refuses."""
    instant = now + rng.choice([-400 * DAY, -DAY, -3600, -61, -1, 0, 1, 59, 3600, DAY, 40 * DAY])
    if rng.random() < 0.5:
        sign, hh, mm = "+", 0, 0
        offset_text = rng.choice(["Z", "z", "+00:00", "-00:00"])
    else:
        sign = rng.choice("+-")
        hh = rng.choice([0, 1, 5, 12, 23, 23, 24, 30, 99])
        mm = rng.choice([0, 30, 59, 59, 60, 75])
        offset_text = f"{sign}{hh:02d}:{mm:02d}"
    shift = (hh * 3600 + mm * 60) * (1 if sign == "+" else -1)
    local = s.ts(instant + shift)
    year = rng.choice([local.year] * 8 + [0, 99, 1969, 1970, 9999])
    second = local.second if rng.random() < 0.9 else 60
    sep = rng.choice("TTTTt ")
    frac = rng.choice([""] * 6 + [".5", ".123456789", ".999999999999", "."])
    text = (
        f"{year:04d}-{local.month:02d}-{local.day:02d}{sep}{local.hour:02d}:{local.minute:02d}"
        f":{second:02d}{frac}{offset_text}"
    )
    r = rng.random()
    if r < 0.03:
        text = text.replace(f"-{local.day:02d}", "-31", 1)
    elif r < 0.06:
        text = f"{year:04d}-02-29" + text[10:]
    elif r < 0.08:
        text = text[:-len(offset_text)]
    elif r < 0.10:
        text = text[:11] + "24" + text[13:]
    return text


# --------------------------------------------------------------------------- mutations
INT_KEYS = {"version", "tcbType", "tcbEvaluationDataNumber", "pcesvn", "svn", "isvsvn", "isvprodid"}
DATE_KEYS = {"issueDate", "nextUpdate", "tcbDate"}
HEX_KEYS = {"miscselect", "miscselectMask", "attributes", "attributesMask", "mrsigner", "fmspc"}


def mutate_document(doc: Any, rng: random.Random, now: int) -> str:
    """One to three random edits of a signed JSON document; the kind goes in ``doc``."""
    kinds = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        op = rng.choice(
            ["number", "number", "date", "date", "status", "status", "duplicate", "delete",
             "set", "unknown", "hex", "levels"]
        )
        kinds.append(op)
        if op == "number":
            spots = leaves(doc, lambda k, v: k in INT_KEYS and isinstance(v, int))
            if spots:
                o, i = rng.choice(spots)
                o[i] = (o[i][0], Raw(number_lexeme(rng, o[i][1])))
        elif op == "date":
            spots = leaves(doc, lambda k, v: k in DATE_KEYS)
            if not spots:  # an earlier edit deleted them
                kinds.pop()
                continue
            o, i = rng.choice(spots)
            o[i] = (o[i][0], random_date(rng, now))
        elif op == "status":
            spots = leaves(doc, lambda k, v: k == "tcbStatus")
            if not spots:
                kinds.pop()
                continue
            o, i = rng.choice(spots)
            o[i] = (o[i][0], rng.choice(STATUSES))
        elif op == "duplicate":
            filled = [o for o in objects(doc) if o]
            if not filled:
                kinds.pop()
                continue
            o = rng.choice(filled)
            i = rng.randrange(len(o))
            key, value = o[i]
            if not key.startswith("x"):  # serde ignores repeated unknown keys; we refuse them
                other = rng.choice([value, random_value(rng), "Revoked", "UpToDate"])
                o.insert(rng.choice([i, i + 1, len(o)]), (key, other))
        elif op == "delete":
            filled = [o for o in objects(doc) if o]
            if not filled:
                kinds.pop()
                continue
            o = rng.choice(filled)
            del o[rng.randrange(len(o))]
        elif op == "set":
            filled = [o for o in objects(doc) if o]
            if not filled:
                kinds.pop()
                continue
            o = rng.choice(filled)
            i = rng.randrange(len(o))
            o[i] = (o[i][0], random_value(rng))
        elif op == "unknown":
            o = rng.choice(objects(doc))
            key = f"x{len(o)}{rng.randrange(99)}"
            o.insert(rng.randrange(len(o) + 1), (key, random_value(rng)))
        elif op == "hex":
            spots = leaves(doc, lambda k, v: k in HEX_KEYS and isinstance(v, str))
            if not spots:
                kinds.pop()
                continue
            o, i = rng.choice(spots)
            v = o[i][1]
            o[i] = (o[i][0], rng.choice([v.lower(), v[:-2], v + "00", v[:-1] + "G", "0x" + v[2:]]))
        elif op == "levels":
            spots = leaves(doc, lambda k, v: k == "tcbLevels" and isinstance(v, list))
            if not spots:
                kinds.pop()
                continue
            o, i = rng.choice(spots)
            levels = list(o[i][1])
            rng.shuffle(levels)
            if levels and rng.random() < 0.3:
                levels.pop()
            o[i] = (o[i][0], levels)
    text = dump(doc, rng, ws=0.2 if rng.random() < 0.15 else 0)
    if rng.random() < 0.03:
        text += rng.choice([" ", "\n", " x", "}"])
    return "+".join(kinds) + "\n" + text


# Statuses of the scenario's levels: every one occurs, the ones that verify more often.
PLATFORM_WEIGHTS = {status: 3 for status in KNOWN_TCB_STATUSES} | {"Revoked": 1}
QE_WEIGHTS = PLATFORM_WEIGHTS | {
    "UpToDate": 6, "OutOfDate": 4, "SWHardeningNeeded": 1, "ConfigurationAndSWHardeningNeeded": 1
}

MODULE_WEIGHTS = {status: 1 for status in KNOWN_TCB_STATUSES} | {"UpToDate": 10, "OutOfDate": 5}


def pick(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def make_case(pki: s.Pki, rng: random.Random) -> tuple[str, dict[str, Any], int]:
    """A random scenario (platform and QE statuses) with random edits; returns its kind."""
    now = pki.now
    advisories = ["INTEL-SA-00001", "INTEL-SA-00002", "INTEL-SA-00003"]
    qe_levels = [
        s.qe_level(8, pick(rng, QE_WEIGHTS), rng.sample(advisories, 2)),
        s.qe_level(6, pick(rng, QE_WEIGHTS)),
    ]
    if rng.random() < 0.35:
        kinds = ["tdx"]
        module = [rng.choice([1, 2, 3, 4]), rng.choice([0, 1, 1, 1])]
        tee_tcb_svn = bytes(module + [rng.choice([1, 2, 3])] * 14)
        sc = s.tdx_scenario(
            pki,
            levels=[
                s.tdx_tcb_level(pick(rng, PLATFORM_WEIGHTS), rng.sample(advisories, 2)),
                s.tdx_tcb_level(pick(rng, PLATFORM_WEIGHTS), rng.sample(advisories, 1), 1),
            ],
            module_levels=[
                s.qe_level(3, pick(rng, MODULE_WEIGHTS), rng.sample(advisories, 1)),
                s.qe_level(2, pick(rng, MODULE_WEIGHTS)),
            ],
            qe_levels=qe_levels,
            report_kwargs={"tee_tcb_svn": tee_tcb_svn},
        )
    else:
        kinds = ["sgx"]
        sc = s.scenario(
            pki,
            levels=[
                s.tcb_level([5] * 16, 13, pick(rng, PLATFORM_WEIGHTS), rng.sample(advisories, 2)),
                s.tcb_level([4] * 16, 13, pick(rng, PLATFORM_WEIGHTS), rng.sample(advisories, 1)),
            ],
            qe_kwargs={"levels": qe_levels},
        )
    col = dict(sc.collateral)
    at = now + rng.choice([0] * 6 + [-DAY, -1, 1, 3600, 20 * DAY, 29 * DAY, 30 * DAY])
    for field in ("tcb_info", "qe_identity"):
        if rng.random() < 0.5:
            kind, text = mutate_document(load(col[field]), rng, now).split("\n", 1)
            kinds.append(f"{field}:{kind}")
            col[field] = text
            col[f"{field}_signature"] = s.raw_sig(pki.tcb_key, text.encode()).hex()
    for field, default_cn, default_key, serials in (
        ("pck_crl", CA_CN, pki.ca_key, (4, 5, 99)),
        ("root_ca_crl", pki.root_name, pki.root_key, (1, 2, 3, 99)),
    ):
        if rng.random() < 0.25:
            kinds.append(f"{field}:rebuilt")
            this = now + rng.choice([-10 * DAY, -DAY, -1, 0, 1, DAY])
            nxt = max(this, now + rng.choice([-DAY, -1, 0, 1, 3600, 20 * DAY, 400 * DAY]))
            revoked = tuple(sorted(rng.sample(serials, rng.randrange(2))))
            cn = default_cn if rng.random() < 0.85 else rng.choice([CA_CN, pki.root_name, "Other"])
            key = default_key if rng.random() < 0.85 else rng.choice([pki.ca_key, pki.tcb_key])
            col[field] = pki.crl(cn, key, this, nxt, revoked).hex()
    return " ".join(kinds), {"collateral": col, "quote": sc.quote.hex()}, at


def build_extension_tests() -> None:
    assert JLPM.exists(), "jlpm comes with jupyterlab: pip install -e '.[test]'"
    assert (EXTENSION / "node_modules").is_dir(), "run `jlpm install` in extensions/jupyterlab-ppml"
    proc = subprocess.run(
        [str(JLPM), "build:test"], cwd=EXTENSION, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def test_browser_verifier_agrees_with_dcap_qvl_on_random_resigned_collateral(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = int(os.environ.get("PPML_DIFF_SEED") or int.from_bytes(os.urandom(6), "big"))
    count = int(os.environ.get("PPML_DIFF_CASES", "1000"))
    rng = random.Random(seed)
    pki = s.Pki(now=int(time.time()))  # fresh keys every run
    quotes: dict[str, str] = {}
    cases: list[dict[str, Any]] = []
    expected: list[dict[str, Any]] = []
    for n in range(count):
        kind, data, at = make_case(pki, rng)
        qid = quotes.setdefault(data["quote"], f"q{len(quotes)}")
        col = data["collateral"]
        cases.append({"id": f"{n}: {kind}", "quote": qid, "collateral": col, "now": at})
        expected.append(s.verdict(bytes.fromhex(data["quote"]), col, pki.root_der, at))
    src = tmp_path / "cases.json"
    src.write_text(
        json.dumps(
            {
                "root_der": pki.root_der.hex(),
                "quotes": {qid: quote for quote, qid in quotes.items()},
                "cases": cases,
                "dcap_qvl": expected,  # for replays by hand; the runner ignores it
            }
        )
    )
    build_extension_tests()
    out = tmp_path / "browser.json"
    proc = subprocess.run(
        ["node", str(EXTENSION / "build" / "test" / "test" / "differential.js")],
        env={
            **os.environ,
            "PPML_DIFFERENTIAL_INPUT": str(src),
            "PPML_DIFFERENTIAL_OUTPUT": str(out),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(out.read_text())
    assert len(got) == len(cases)

    tally: Counter[str] = Counter()
    mismatches = []
    for case, want, have in zip(cases, expected, got, strict=True):
        tally["dcap-qvl ok" if "status" in want else "dcap-qvl error"] += 1
        tee = case["id"].split(": ", 1)[1].split()[0]
        tally[f"{tee} cases"] += 1
        if "status" in want:
            tally[f"{tee} status {want['status']}"] += 1
        for part in case["id"].split(": ", 1)[1].split()[1:]:
            field, _, ops = part.partition(":")
            for op in ops.split("+"):
                tally[f"mutation {field} {op}"] += 1
        same = ("error" in want and "error" in have) or want == have
        if not same:
            mismatches.append({"case": case["id"], "dcap-qvl": want, "browser": have})
    with capsys.disabled():
        print(f"\ndifferential: seed {seed}, {count} cases, {len(mismatches)} mismatches")
        for key, value in sorted(tally.items()):
            print(f"  {key}: {value}")
    if mismatches:
        keep = tmp_path / "mismatches.json"
        keep.write_text(json.dumps(mismatches, indent=1))
    assert not mismatches, (
        f"seed {seed}: {len(mismatches)} of {count} differ (replay with PPML_DIFF_SEED={seed}); "
        f"first: {json.dumps(mismatches[:3])[:3000]}"
    )
    assert tally["dcap-qvl ok"] >= count // 10 and tally["dcap-qvl error"] >= count // 10
