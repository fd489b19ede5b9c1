"""The executor's key agent (``python -m ppml_kernel.keys.broker.agent``), no Spark.

A real agent process, started the way an executor JVM starts it, in front of a real
attested key broker (simulated enclaves, dcap-qvl verification). The test process plays
the executor JVM: it is the agent's parent and talks the local broker's wire format.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.foreign_peer import ask_as_foreign_process

from ppml_kernel.attestation import Policy
from ppml_kernel.keys.broker import protocol as P
from ppml_kernel.keys.broker.agent import FAILED, READY
from ppml_kernel.keys.broker.attested import KeyBroker
from ppml_kernel.keys.broker.local import BrokerClient, _recv, _send
from ppml_kernel.keys.errors import DatasetKeyError
from ppml_kernel.keys.store import KeyStore
from ppml_kernel.keys.wrap import unwrap_with_kek, wrap_with_kek
from ppml_kernel.tee.simulated import SimulatedAttester

KEK = bytes(range(7, 39))
DATA_KEY = bytes(range(200, 232))
CONTEXT = b"ppml parquet modular encryption\0"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agent-pki") / "pki"


@pytest.fixture
def driver(pki: Path) -> SimulatedAttester:
    return SimulatedAttester(pki_dir=pki)


@pytest.fixture
def broker(driver: SimulatedAttester):
    with KeyBroker(driver_policy(driver), KeyStore({"kek-1": KEK}), driver) as b:
        yield b


def driver_policy(driver: SimulatedAttester) -> Policy:
    """What executors ask of the driver here (and the driver of executors): its code."""
    return Policy(mrenclave=(driver.mrenclave.hex(),), allow_simulated=True)


class Agent:
    """One agent process, started as the executor JVM starts it (stdin kept open)."""

    def __init__(self, broker: KeyBroker, pki: Path, **env: str) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("PPML_")}
        environ.update({
            "PPML_TEE": "simulated",
            "PPML_SIM_PKI_DIR": str(pki),
            P.ENV_BROKER: broker.address,
            P.ENV_BROKER_ID: broker.fingerprint,
            P.ENV_DRIVER_POLICY: json.dumps(driver_policy(SimulatedAttester(pki_dir=pki))
                                            .to_dict()),
            **env,
        })
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ppml_kernel.keys.broker.agent"], env=environ,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        self.first_line = self.process.stdout.readline().decode().strip()

    @property
    def path(self) -> str:
        assert self.first_line.startswith(READY + " "), self.first_line
        return self.first_line.split(" ", 1)[1]

    def close(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(timeout=30)


@pytest.fixture
def agents():
    started: list[Agent] = []
    yield started
    for agent in started:
        if agent.process.poll() is None:
            agent.process.kill()
            agent.process.wait()


def test_the_agent_attests_and_serves_its_jvm_keys_the_driver_granted(broker, pki, agents):
    agents.append(agent := Agent(broker, pki))
    wrapped = wrap_with_kek(KEK, "kek-1", DATA_KEY, CONTEXT)
    client = BrokerClient(agent.path)
    assert client.unwrap("kek-1", wrapped, CONTEXT) == DATA_KEY
    attests = broker.audit.events("attest")
    assert len(attests) == 1 and attests[0].ok
    assert f"pid {agent.process.pid}" in attests[0].executor  # the agent attested itself
    grants = broker.audit.events("grant")
    assert [(g.reason, g.key_ids) for g in grants] == [("unwrap", ("kek-1",))]
    # A writer's new data key is wrapped by the driver (the KEK never leaves it).
    new_key = os.urandom(32)
    rewrapped = client.wrap("kek-1", new_key, CONTEXT)
    assert unwrap_with_kek(KEK, "kek-1", rewrapped, CONTEXT) == new_key
    assert len(broker.audit.events("attest")) == 1  # one attestation per agent
    assert agent.close() == 0  # stdin closed: the JVM is gone, the agent ends
    assert not Path(agent.path).exists()


def test_an_executor_that_fails_attestation_gets_nothing_through_the_agent(broker, pki,
                                                                          agents):
    agents.append(agent := Agent(broker, pki, PPML_SIM_TCB_STATUS="OutOfDate"))
    wrapped = wrap_with_kek(KEK, "kek-1", DATA_KEY, CONTEXT)
    with pytest.raises(DatasetKeyError) as info:
        BrokerClient(agent.path).unwrap("kek-1", wrapped, CONTEXT)
    assert "refused this executor" in str(info.value)
    assert "tcb_status is OutOfDate" in str(info.value)
    assert not broker.audit.events("grant")


def test_the_agent_refuses_a_driver_that_does_not_prove_itself(broker, pki, agents):
    other = Policy(mrenclave=("ab" * 32,), allow_simulated=True)
    agents.append(agent := Agent(broker, pki,
                                 **{P.ENV_DRIVER_POLICY: json.dumps(other.to_dict())}))
    wrapped = wrap_with_kek(KEK, "kek-1", DATA_KEY, CONTEXT)
    with pytest.raises(DatasetKeyError, match="is not an attested driver"):
        BrokerClient(agent.path).unwrap("kek-1", wrapped, CONTEXT)


@pytest.mark.parametrize("peers_env", [{}, {"PPML_KEY_BROKER_PEERS": "same-user"}],
                         ids=["default", "host-sets-same-user"])
def test_only_the_jvm_and_its_descendants_may_ask_the_agent(broker, pki, agents,
                                                            tmp_path: Path, peers_env):
    """A process of the same user that the executor JVM did not start is refused, also
    when the executor's environment (which the host may set) asks for the weaker mode."""
    agents.append(agent := Agent(broker, pki, **peers_env))
    reply = ask_as_foreign_process(agent.path, tmp_path / "reply.json")
    assert reply["ok"] is False and reply["error"] == "denied"
    assert f"is not started by the executor JVM (pid {os.getpid()})" in reply["message"]
    assert not broker.audit.events()  # nothing reached the driver's broker


def test_malformed_requests_get_errors_and_the_agent_keeps_serving(broker, pki, agents):
    import socket

    agents.append(agent := Agent(broker, pki))
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(agent.path)
        for req in ({"op": "unwrap"}, {"op": "unwrap", "key_id": "../x", "kcv": "",
                                       "nonce": "", "ct": "", "ctx": ""}, {"op": "rm"}):
            _send(s, req)
            reply = _recv(s)
            assert reply["ok"] is False and reply["error"] == "bad_request", reply
    wrapped = wrap_with_kek(KEK, "kek-1", DATA_KEY, CONTEXT)
    assert BrokerClient(agent.path).unwrap("kek-1", wrapped, CONTEXT) == DATA_KEY


def test_an_agent_that_cannot_serve_says_why_on_its_first_line(broker, pki, agents,
                                                              tmp_path: Path):
    """The JVM reports the agent's own reason (here: a socket directory another user
    could read) instead of waiting or falling back to another broker."""
    tmp = tmp_path / "tmp"
    (tmp / f"ppml-kernel-{os.getuid()}").mkdir(parents=True, mode=0o755)
    (tmp / f"ppml-kernel-{os.getuid()}").chmod(0o755)
    agents.append(agent := Agent(broker, pki, TMPDIR=str(tmp)))
    assert agent.first_line.startswith(FAILED + " "), agent.first_line
    assert "accessible by other users" in agent.first_line
    assert agent.process.wait(timeout=30) == 1
