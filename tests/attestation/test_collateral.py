"""Collateral fetched over HTTP from a PCCS-shaped server on 127.0.0.1, cached on disk."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlparse

import pytest
from conftest import VECTORS, load_vectors

from ppml_kernel.attestation import Collateral, CollateralClient, CollateralError, Policy, Verifier

VECTOR = next(v for v in load_vectors() if v.name == "dcap-qvl/sgx_quote")


def _signed(key: str, raw_json: str, signature: str) -> str:
    """A PCS response body: the signed object's exact bytes plus its signature."""
    return '{"' + key + '":' + raw_json + ',"signature":"' + signature + '"}'


class FakePCCS:
    """Serves one vector's collateral the way Intel PCS v4 / a PCCS does."""

    def __init__(self, collateral: dict) -> None:
        self.collateral = collateral
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.requests.append(self.path)
                url = urlparse(self.path)
                params = parse_qs(url.query)
                c = fake.collateral
                if url.path == "/sgx/certification/v4/pckcrl":
                    assert params["ca"] == ["processor"] and params["encoding"] == ["der"]
                    self._send(
                        bytes.fromhex(c["pck_crl"]),
                        {"SGX-PCK-CRL-Issuer-Chain": quote(c["pck_crl_issuer_chain"])},
                    )
                elif url.path == "/sgx/certification/v4/tcb":
                    assert params["fmspc"] == ["00A067110000"]
                    body = _signed("tcbInfo", c["tcb_info"], c["tcb_info_signature"])
                    self._send(
                        body.encode(), {"TCB-Info-Issuer-Chain": quote(c["tcb_info_issuer_chain"])}
                    )
                elif url.path == "/sgx/certification/v4/qe/identity":
                    body = _signed("enclaveIdentity", c["qe_identity"], c["qe_identity_signature"])
                    self._send(
                        body.encode(),
                        {"SGX-Enclave-Identity-Issuer-Chain": quote(c["qe_identity_issuer_chain"])},
                    )
                elif url.path == "/sgx/certification/v4/rootcacrl":
                    self._send(c["root_ca_crl"].encode(), {})  # PCCS answers hex text
                else:
                    self.send_error(404)

            def _send(self, body: bytes, headers: dict) -> None:
                self.send_response(200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pccs():
    server = FakePCCS(json.loads(VECTOR.collateral_path.read_text()))
    yield server
    server.close()


def test_fetch_rebuilds_exact_collateral_and_verifies(pccs, tmp_path):
    client = CollateralClient(pccs.url, cache_dir=tmp_path)
    fetched = client.for_quote(VECTOR.quote, at=VECTOR.verify_at)
    original = json.loads(VECTOR.collateral_path.read_text())
    assert json.loads(fetched.text) == original
    policy = Policy(allowed_tcb_statuses=("ConfigurationAndSWHardeningNeeded",))
    result = Verifier(policy, collateral_client=client).verify(VECTOR.quote, at=VECTOR.verify_at)
    assert result.passed, result.reason


def test_cache_serves_until_expiry(pccs, tmp_path):
    client = CollateralClient(pccs.url, cache_dir=tmp_path)
    client.for_quote(VECTOR.quote, at=VECTOR.verify_at)
    assert len(pccs.requests) == 4
    client.for_quote(VECTOR.quote, at=VECTOR.verify_at + 60)
    assert len(pccs.requests) == 4, "a valid cached copy must not be fetched again"
    expiry = Collateral.load(VECTOR.collateral_path).expires_at()
    client.for_quote(VECTOR.quote, at=expiry + 1)
    assert len(pccs.requests) == 8, "expired collateral is fetched again"


def test_offline_gives_clear_error(tmp_path):
    from support.servers import free_port

    port = free_port()  # nothing listens there: the PCCS is unreachable
    client = CollateralClient(f"http://127.0.0.1:{port}", cache_dir=tmp_path, timeout=2)
    with pytest.raises(CollateralError, match=r"cannot reach .*offline"):
        client.for_quote(VECTOR.quote, at=VECTOR.verify_at)
    result = Verifier(collateral_client=client).verify(VECTOR.quote, at=VECTOR.verify_at)
    assert not result.passed and result.stage == "collateral" and "offline" in result.reason


def test_http_error_named(pccs, tmp_path):
    client = CollateralClient(pccs.url + "/nothing-here", cache_dir=tmp_path)
    with pytest.raises(CollateralError, match="HTTP 404"):
        client.fetch("sgx", "00A067110000", "processor")


def test_malformed_collateral_file_named(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text('{"pck_crl": "00"}')
    with pytest.raises(CollateralError, match=r"c\.json lacks field"):
        Collateral.load(bad)
    bad.write_text("not json")
    with pytest.raises(CollateralError, match="not valid JSON"):
        Collateral.load(bad)


def test_intel_defaults_use_tls():
    client = CollateralClient()
    assert client.base_url.startswith("https://") and client.verify_tls is True
    assert client.root_ca_crl_url.startswith("https://")
    assert (VECTORS / "IntelSGXRootCA.der").exists()
