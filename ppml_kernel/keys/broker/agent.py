"""The executor's key agent: a local broker socket in front of the attested key client.

On an attested cluster, executors get data keys only from the driver's attested key
broker, and only the Python key client (:mod:`.client`) can attest. Spark's own
readers run in the executor JVM (Parquet's ``ppml.BrokerKmsClient`` and the
``ppml-aead/1`` codec, through ``ppml.BrokerClient``), so without help they could not
get keys there, and every encrypted read took the slower Python data-source path.

The executor JVM starts this agent (once, when its first encrypted read needs a key)
when ``$PPML_KEY_AGENT`` names a Python interpreter; the driver sets that through
``spark.executorEnv``. The agent serves the local broker's wire format on a Unix socket
in a private directory, answers only its parent JVM and that JVM's descendants
(``SO_PEERCRED``), and forwards every request to an attested
:class:`~ppml_kernel.keys.broker.client.KeyClient`: it quotes, checks the driver's quote,
and gets each data key sealed to its own ephemeral key. The KEKs stay in the driver;
an executor that fails attestation gets nothing, exactly as on the Python path. Under
Occlum the agent is a process of the same enclave (a LibOS ``spawn``), so its quote is
the executor's.

Protocol with the JVM: the first line on stdout is ``ppml-key-agent <socket path>``, or
``ppml-key-agent-error <reason>`` and exit status 1. The agent lives until its stdin
closes (the JVM exits or stops it).
"""

from __future__ import annotations

import argparse
import os
import sys

ENV_AGENT = "PPML_KEY_AGENT"  # on executors: the Python that runs this agent
READY = "ppml-key-agent"
FAILED = "ppml-key-agent-error"


def serve(parent: int) -> int:
    """Serve until stdin closes; the ready (or error) line goes to stdout first."""
    from ppml_kernel.keys.broker.client import BrokerKeyProvider
    from ppml_kernel.keys.broker.local import PEERS_DESCENDANTS, LocalKeyBroker
    from ppml_kernel.keys.errors import DatasetKeyError

    try:
        # Always the descendant check: $PPML_KEY_BROKER_PEERS comes from the executor's
        # environment, which the host may set; it never widens who gets attested keys.
        broker = LocalKeyBroker(BrokerKeyProvider(), peers=PEERS_DESCENDANTS, root_pid=parent,
                                root_name=f"the executor JVM (pid {parent})")
    except (DatasetKeyError, OSError) as exc:
        print(f"{FAILED} {' '.join(str(exc).split())}", flush=True)
        return 1
    try:
        print(f"{READY} {broker.path}", flush=True)
        while sys.stdin.buffer.read(4096):
            pass  # nothing is sent on stdin: EOF means the JVM is gone or done with us
    finally:
        broker.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ppml_kernel.keys.broker.agent",
        description="Serve an executor JVM's key requests through this executor's "
                    "attested key client (started by the JVM; not for interactive use).",
    )
    parser.add_argument("--parent", type=int, default=os.getppid(),
                        help="pid whose descendants may ask for keys (default: the parent)")
    args = parser.parse_args(argv)
    return serve(args.parent)


if __name__ == "__main__":
    sys.exit(main())
