"""Spark's security settings for an attested cluster, and a table of what is on.

Facts this module encodes (BRIEF §6): standalone RPC authentication uses one static
secret shared by the daemons and every application; ``spark.network.crypto`` defaults
to an unauthenticated cipher, so AES-GCM and auth engine v2 are set explicitly and SASL
fallback is switched off; ``spark.io.encryption`` covers shuffle, spills and on-disk
blocks (not output files); the Python worker socket can be a Unix socket since 4.1.
Nothing here puts a secret on a command line: the driver's secret goes through py4j
into the JVM's ``SparkConf``, the daemons' through a 0600 properties file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

AUTH = "spark.authenticate"
AUTH_SECRET = "spark.authenticate.secret"
NETWORK_CRYPTO = "spark.network.crypto.enabled"
CRYPTO_CIPHER = "spark.network.crypto.cipher"
AUTH_ENGINE = "spark.network.crypto.authEngineVersion"
SASL_FALLBACK = "spark.network.crypto.saslFallback"
RPC_TLS = "spark.ssl.rpc.enabled"
IO_ENCRYPTION = "spark.io.encryption.enabled"
UI_ENABLED = "spark.ui.enabled"
UNIX_SOCKET = "spark.python.unix.domain.socket.enabled"
EVENT_LOG = "spark.eventLog.enabled"
REST_SERVER = "spark.master.rest.enabled"
GCM = "AES/GCM/NoPadding"

# Settings that every side of an RPC connection must agree on.
RPC_SETTINGS: dict[str, str] = {
    AUTH: "true",
    NETWORK_CRYPTO: "true",
    CRYPTO_CIPHER: GCM,
    AUTH_ENGINE: "2",
    SASL_FALLBACK: "false",
}


def _version_at_least(version: str, major: int, minor: int) -> bool:
    parts = version.split(".")
    try:
        return (int(parts[0]), int(parts[1])) >= (major, minor)
    except (IndexError, ValueError):
        return False


def driver_settings(spark_version: str, master: str) -> dict[str, str]:
    """The hardened application settings (without the secret) for ``master``."""
    settings = dict(RPC_SETTINGS)
    settings.update({IO_ENCRYPTION: "true", UI_ENABLED: "false", EVENT_LOG: "false"})
    settings["spark.ui.showConsoleProgress"] = "false"  # no progress bars in notebook output
    if _version_at_least(spark_version, 4, 1):
        settings[UNIX_SOCKET] = "true"
    return settings


def daemon_properties(secret: str) -> dict[str, str]:
    """What standalone master and workers need: the shared secret and matching RPC crypto."""
    props = dict(RPC_SETTINGS)
    props[AUTH_SECRET] = secret
    props[REST_SERVER] = "false"
    props["spark.worker.cleanup.enabled"] = "false"
    return props


def _escape_property(text: str) -> str:
    out = []
    for ch in text:
        if ch in "\\:=#! \t":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        else:
            out.append(ch)
    return "".join(out)


def write_private_properties(path: str | os.PathLike[str], props: dict[str, str]) -> Path:
    """Write a Java properties file readable only by its owner (created 0600, never reused)."""
    target = Path(path)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        text = "".join(f"{_escape_property(k)}={_escape_property(v)}\n" for k, v in props.items())
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)
    return target


GOOD, BAD, WARN, INFO = "good", "bad", "warn", "info"


@dataclass(frozen=True)
class Row:
    """One protection in the report: its state, whether that is good, and the detail."""

    protection: str
    state: str  # what is set: "on", "off", "TLS", ...
    level: str  # good | bad | warn | info
    detail: str


class SecurityReport:
    """What a connected session actually runs with, read back from Spark's own conf."""

    def __init__(self, rows: list[Row], title: str = "Spark session security") -> None:
        self.rows = rows
        self.title = title

    @classmethod
    def from_conf(
        cls,
        conf: dict[str, str],
        *,
        master: str,
        secret_origin: str,
        broker: str | None,
        policy_summary: str | None,
    ) -> SecurityReport:
        def on(key: str, default: str = "false") -> bool:
            return conf.get(key, default).strip().lower() == "true"

        rows: list[Row] = []
        if on(AUTH):
            rows.append(Row("RPC authentication", "on", GOOD, f"secret {secret_origin}"))
        else:
            rows.append(Row("RPC authentication", "off", BAD, "anyone reaching the driver joins"))
        if on(RPC_TLS):
            rows.append(Row("RPC encryption", "TLS", GOOD, "spark.ssl.rpc (wins over AES)"))
        elif on(NETWORK_CRYPTO):
            cipher = conf.get(CRYPTO_CIPHER, "AES/CTR/NoPadding")
            engine = conf.get(AUTH_ENGINE, "1")
            fallback = on(SASL_FALLBACK, "true")
            good = cipher == GCM and engine == "2" and not fallback
            detail = f"{cipher}, auth engine v{engine}, SASL fallback {'on' if fallback else 'off'}"
            if cipher != GCM:
                detail += " (CTR is not authenticated: set AES/GCM/NoPadding)"
            rows.append(Row("RPC encryption", "on", GOOD if good else WARN, detail))
        else:
            rows.append(Row("RPC encryption", "off", BAD, "RPC traffic is plaintext"))
        io = on(IO_ENCRYPTION)
        rows.append(
            Row(
                "I/O encryption",
                "on" if io else "off",
                GOOD if io else BAD,
                "shuffle, spills, on-disk cached and broadcast blocks (not output files)",
            )
        )
        if on(UI_ENABLED, "true"):
            rows.append(Row("Web UI", "on", WARN, "no authentication: bind it to 127.0.0.1"))
        else:
            rows.append(Row("Web UI", "off", GOOD, f"{UI_ENABLED}=false"))
        if on(UNIX_SOCKET):
            rows.append(Row("Python worker socket", "Unix", GOOD, "Unix domain socket"))
        else:
            rows.append(Row("Python worker socket", "TCP", WARN, "loopback TCP (Spark < 4.1)"))
        if on(EVENT_LOG):
            rows.append(Row("Event log", "on", WARN, "records plans and conf (secrets redacted)"))
        else:
            rows.append(Row("Event log", "off", GOOD, "nothing written"))
        if broker:
            rows.append(Row("Key broker", "on", GOOD, f"{broker}; {policy_summary or ''}"))
        not_covered = "py4j gateway (loopback, token), output files, daemons' web UIs"
        if master.startswith("spark://"):
            not_covered += "; standalone shares one RPC secret across the whole cluster"
        rows.append(Row("Not covered", "-", INFO, not_covered))
        return cls(rows)

    def level(self, protection: str) -> str | None:
        for row in self.rows:
            if row.protection == protection:
                return row.level
        return None

    def __repr__(self) -> str:
        width = max(len(r.protection) for r in self.rows)
        lines = [self.title]
        for r in self.rows:
            mark = {GOOD: "ok  ", BAD: "BAD ", WARN: "WARN", INFO: "    "}[r.level]
            lines.append(f"  [{mark}] {r.protection:<{width}}  {r.state:<4}  {r.detail}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from ppml_kernel.spark.display import security_html

        return security_html(self)
