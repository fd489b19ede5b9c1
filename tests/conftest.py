"""Shared fixtures: the real DCAP vectors, isolated Jupyter/PKI directories."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
VECTORS = DATA / "vectors"


@dataclass(frozen=True)
class Vector:
    """One entry of tests/data/vectors/MANIFEST.json."""

    entry: dict

    @property
    def name(self) -> str:
        return self.entry["quote"]

    @property
    def quote(self) -> bytes:
        from ppml_kernel.attestation import load_quote_bytes

        return load_quote_bytes((VECTORS / self.entry["quote"]).read_bytes())

    @property
    def collateral_path(self) -> Path | None:
        c = self.entry.get("collateral")
        return VECTORS / c if c else None

    @property
    def verify_at(self) -> int | None:
        return self.entry.get("verify_at")

    @property
    def expected(self) -> str:
        return self.entry["expected"]


def load_vectors() -> list[Vector]:
    return [Vector(e) for e in json.loads((VECTORS / "MANIFEST.json").read_text())]


@pytest.fixture(autouse=True)
def isolated_jupyter(tmp_path_factory, monkeypatch):
    """Keep tests away from the user's real Jupyter data dir and simulated PKI."""
    home = tmp_path_factory.mktemp("jupyter-home")
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(home / "runtime"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("PPML_SIM_PKI_DIR", str(home / "sim-pki"))
    monkeypatch.delenv("PPML_POLICY", raising=False)
    monkeypatch.delenv("PPML_TEE", raising=False)
    yield home
