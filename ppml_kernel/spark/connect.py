"""Connect the (attested) driver to a Spark cluster whose executors must attest for keys.

:func:`connect` starts the key broker, builds the driver's SparkContext with the
hardened settings of :mod:`ppml_kernel.spark.security`, and sweeps the executors: one
attestation probe per executor, shown as a table. It never puts the RPC secret on a
command line or in a conf: the py4j gateway is started first without it, then the
secret goes through py4j into the driver JVM's Hadoop credentials (where Spark looks
first) and the conf carries only a placeholder (see :func:`_hold_secret`), so
``getConf()``, the SQL conf and the event log never show it. pyspark is imported here,
on the first connect, never at kernel start.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppml_kernel.keys.broker import protocol as P
from ppml_kernel.spark.errors import SparkSessionError
from ppml_kernel.spark.security import AUTH_SECRET, SecurityReport, driver_settings

if TYPE_CHECKING:
    from ppml_kernel.attestation import Policy
    from ppml_kernel.keys.broker.attested import KeyBroker
    from ppml_kernel.keys.broker.core import KeySource
    from ppml_kernel.keys.broker.sessions import Attestation
    from ppml_kernel.tee.base import Attester

ENV_SECRET_FILE = "PPML_SPARK_AUTH_SECRET_FILE"
SECRET_ALIAS = "sparkCookie"  # Spark's SecurityManager.SECRET_LOOKUP_KEY
SECRET_PLACEHOLDER = "held-in-driver-credentials"
SWEEP_GROUP = "ppml-attestation-sweep"
DRIVER_CLASSPATH = "spark.driver.extraClassPath"
EXECUTOR_CLASSPATH = "spark.executor.extraClassPath"
JARS = "spark.jars"


class ConnectError(SparkSessionError, RuntimeError):
    """The session could not be built (the message says what to change)."""


_CURRENT: ClusterSession | None = None
_CURRENT_LOCK = threading.RLock()


# -- policy -----------------------------------------------------------------------


def own_measurement(attester: Attester) -> dict[str, str]:
    """MRENCLAVE/MRSIGNER (or MRTD) of this driver, read from a fresh quote of its own."""
    from ppml_kernel.attestation.quote import parse_quote

    info = parse_quote(attester.quote(os.urandom(64)))
    if info.tee == "SGX":
        return {"mrenclave": info.mrenclave or "", "mrsigner": info.mrsigner or ""}
    return {"mrtd": info.mr_td or ""}


def _pins(measurement: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """Policy allow-lists that pin exactly ``measurement``."""
    return {name: (measurement[name],) if measurement.get(name) else ()
            for name in ("mrenclave", "mrsigner", "mrtd")}


def default_cluster_policy(attester: Attester, measurement: dict[str, str]) -> Policy:
    """Executors must run the driver's own code; simulation only if the driver simulates."""
    from ppml_kernel.attestation import Policy

    return Policy(**_pins(measurement), allow_simulated=bool(attester.simulated))


def driver_policy_for(policy: Policy, measurement: dict[str, str], simulated: bool) -> Policy:
    """What executors check the broker's driver quote against: this driver's measurement."""
    from ppml_kernel.attestation import Policy

    return Policy(**_pins(measurement), allowed_tcb_statuses=policy.allowed_tcb_statuses,
                  allow_simulated=simulated)


def describe_policy(policy: Policy) -> str:
    parts = []
    if policy.mrenclave:
        parts.append("MRENCLAVE " + " | ".join(m[:16] + "..." for m in policy.mrenclave))
    if policy.mrsigner:
        parts.append("MRSIGNER " + " | ".join(m[:16] + "..." for m in policy.mrsigner))
    if policy.mrtd:
        parts.append("MRTD " + " | ".join(m[:16] + "..." for m in policy.mrtd))
    if not (policy.mrenclave or policy.mrsigner or policy.mrtd):
        parts.append("ANY measurement (the policy pins none)")
    parts.append("TCB " + "/".join(policy.allowed_tcb_statuses))
    parts.append("simulation ALLOWED" if policy.allow_simulated else "no simulation")
    return "; ".join(parts)


# -- the secret -------------------------------------------------------------------


def _read_secret_file(path: str) -> str:
    try:
        st = os.stat(path)
        if st.st_mode & 0o077:
            raise ConnectError(
                f"secret file {path} is readable by group or others; run: chmod 600 {path}"
            )
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConnectError(f"cannot read secret file {path}: {exc.strerror}") from None
    if len(text) < 16:
        raise ConnectError(f"secret file {path} holds fewer than 16 characters")
    return text


def resolve_secret(master: str, auth_secret: str | None,
                   secret_file: str | None) -> tuple[str | None, str]:
    """(secret or None to let Spark make one, where it came from, for the report)."""
    if auth_secret:
        return auth_secret, "given by the caller, in memory only"
    if secret_file:
        return _read_secret_file(secret_file), f"read from {secret_file}, in memory only"
    if master.startswith("spark://"):
        from ppml_kernel.spark.localcluster import cluster_for

        cluster = cluster_for(master)
        if cluster is not None:
            return cluster.auth_secret, "generated for this local cluster, in memory only"
        env_file = os.environ.get(ENV_SECRET_FILE)
        if env_file:
            return _read_secret_file(env_file), f"read from ${ENV_SECRET_FILE}, in memory only"
        raise ConnectError(
            "a standalone cluster shares one RPC secret with its daemons: pass it with "
            f"--secret-file FILE (mode 0600) or ${ENV_SECRET_FILE}"
        )
    if master.startswith(("k8s://", "yarn", "local")):
        return None, "generated by Spark for this application, in memory only"
    return secrets.token_hex(32), "generated for this session, in memory only"


# -- the session ------------------------------------------------------------------


@dataclass
class SweepReport:
    """One attestation probe per executor: the broker's verdicts, and what was done."""

    rows: list[Attestation]
    executors: list[str]
    missing: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""

    @property
    def refused(self) -> list[Attestation]:
        return [r for r in self.rows if not r.ok]

    @property
    def accepted(self) -> list[Attestation]:
        return [r for r in self.rows if r.ok]

    def __repr__(self) -> str:
        from ppml_kernel.spark.display import attestation_line

        lines = [f"Attestation sweep: {len(self.accepted)} accepted, {len(self.refused)} refused "
                 f"of {len(self.executors)} executor(s) in {self.seconds:.1f} s"]
        lines += [attestation_line(r) for r in self.rows]
        lines += [f"  [NOT PROBED] executor {m}" for m in self.missing]
        if self.excluded:
            lines.append(f"  excluded from this application: {', '.join(self.excluded)}")
        if self.note:
            lines.append(f"  {self.note}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from ppml_kernel.spark.display import sweep_html

        return sweep_html(self)


@dataclass
class ClusterSession:
    """A connected driver: the SparkSession, its key broker and what was verified."""

    spark: Any
    master: str
    broker: KeyBroker
    policy: Policy
    driver_policy: Policy
    security: SecurityReport
    simulated: bool
    sweep: SweepReport | None = None
    connect_seconds: float = 0.0
    session_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def app_id(self) -> str:
        try:
            return str(self.spark.sparkContext.applicationId)
        except Exception:  # best-effort probe: the context may be stopped or the JVM gone
            return "?"

    def executor_ids(self) -> list[str]:
        return executor_ids(self.spark.sparkContext)

    def attest_executors(self, *, exclude_refused: bool = True, timeout: float = 60.0,
                         expected: int | None = None) -> SweepReport:
        """Run the attestation sweep again (e.g. after executors joined)."""
        self.sweep = sweep(self.spark.sparkContext, self.broker, exclude_refused=exclude_refused,
                           timeout=timeout, expected=expected, master=self.master)
        return self.sweep

    def stop(self) -> None:
        """Stop Spark, then the broker (no executor can fetch a key afterwards)."""
        global _CURRENT
        try:
            self.spark.stop()
        finally:
            self.broker.stop()
            with _CURRENT_LOCK:
                if _CURRENT is self:
                    _CURRENT = None

    def status(self) -> ClusterStatus:
        return ClusterStatus(self)

    def _header(self) -> list[tuple[str, str]]:
        rows = [
            ("master", self.master),
            ("application", self.app_id),
            ("key broker", f"{self.broker.address} (key {self.broker.fingerprint[:16]}...)"),
            ("executor policy", describe_policy(self.policy)),
            ("connect time", f"{self.connect_seconds:.1f} s (Spark {self.session_seconds:.1f} s)"),
        ]
        rows += [("note", n) for n in self.notes]
        return rows

    def __repr__(self) -> str:
        lines = [("SIMULATED driver enclave - NOT CONFIDENTIAL" if self.simulated else "")]
        lines += [f"{k:<16} {v}" for k, v in self._header()]
        lines += [repr(self.security)]
        if self.sweep is not None:
            lines.append(repr(self.sweep))
        return "\n".join(x for x in lines if x)

    def _repr_html_(self) -> str:
        from ppml_kernel.spark.display import session_html

        return session_html(self)


class ClusterStatus:
    """Current executors, the newest verdict for each, and the latest audit events."""

    def __init__(self, session: ClusterSession, audit_events: int = 20) -> None:
        self.session = session
        try:
            self.live = session.executor_ids()
        except Exception:  # best-effort probe: a status report of a stopped context
            self.live = []
        from ppml_kernel.spark.display import BrokerStatus, audit_table

        self.broker = BrokerStatus(session.broker)
        self.audit = audit_table(session.broker, audit_events)

    def __repr__(self) -> str:
        return "\n".join([
            *(f"{k:<16} {v}" for k, v in self.session._header()),
            f"{'executors now':<16} {', '.join(self.live) or 'none'}",
            repr(self.broker),
            "Audit log (latest):",
            repr(self.audit),
        ])

    def _repr_html_(self) -> str:
        from ppml_kernel.spark.display import status_html

        return status_html(self)


# -- executors --------------------------------------------------------------------


def executor_ids(sc: Any) -> list[str]:
    """Ids of the executors registered now (the driver excluded unless in local mode)."""
    text = str(sc._jsc.sc().getExecutorIds().mkString(","))
    ids = [i for i in text.split(",") if i]
    if not ids and str(sc.master).startswith("local"):
        return ["driver"]
    return ids


def _wait_for_executors(sc: Any, expected: int | None, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    last: list[str] = []
    stable_since = time.monotonic()
    while True:
        ids = executor_ids(sc)
        if ids != last:
            last, stable_since = ids, time.monotonic()
        if expected is not None and len(ids) >= expected:
            return ids
        if expected is None and ids and time.monotonic() - stable_since > 2.0:
            return ids
        if time.monotonic() > deadline:
            return ids
        time.sleep(0.1)


def _probe_partition(probe_id: str):
    def run(_: Any):
        from ppml_kernel.keys.broker.client import probe

        yield probe(probe_id)

    return run


def _cores_per_executor(sc: Any, n: int) -> int:
    """Cores of each executor (1 in local mode, whose single executor is the driver)."""
    if str(sc.master).startswith("local"):
        return 1  # a resource profile in local mode stops the SparkContext
    conf = sc.getConf()
    text = conf.get("spark.executor.cores")
    if text and text.isdigit():
        return int(text)
    total = int(sc.defaultParallelism)
    return max(1, total // n) if n and total % n == 0 else 1


def sweep(sc: Any, broker: KeyBroker, *, exclude_refused: bool = True, timeout: float = 60.0,
          expected: int | None = None, master: str = "") -> SweepReport:
    """One attestation probe per executor in a barrier stage; refused ones may be excluded."""
    t0 = time.monotonic()
    ids = _wait_for_executors(sc, expected, timeout)
    if not ids:
        return SweepReport([], [], seconds=time.monotonic() - t0,
                           note="no executor registered within the timeout; executors attest "
                                "on their first key request")
    probe_id = uuid.uuid4().hex[:12]
    n = len(ids)
    note = ""
    cores = _cores_per_executor(sc, n)
    deadline = time.monotonic() + timeout

    def barrier() -> None:
        stage = sc.parallelize(range(n), n)
        if cores > 1:
            from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

            profile = ResourceProfileBuilder().require(TaskResourceRequests().cpus(cores)).build
            stage = stage.withResources(profile)
        stage.barrier().mapPartitions(_probe_partition(probe_id)).collect()

    try:
        _run_limited(sc, barrier, deadline - time.monotonic())
    # boundary: a Spark job (py4j, JVM, timeout); a barrier needs n free slots, so
    # fall back to plain tasks and say so
    except Exception as exc:
        note = f"barrier stage failed ({type(exc).__name__}); probed with plain tasks"
        try:
            plain = sc.parallelize(range(n), n).mapPartitions(_probe_partition(probe_id))
            _run_limited(sc, plain.collect, max(5.0, deadline - time.monotonic()))
        except Exception as exc2:  # boundary: the fallback job; the report names it
            note += f"; the probe job failed too ({type(exc2).__name__})"
    rows = broker.attestations(probe_id)
    seen = {r.executor_id for r in rows}
    missing = [i for i in ids if i not in seen and not (i == "driver" and rows)]
    report = SweepReport(rows, ids, missing=missing, note=note)
    # Exclude refused executors only while others remain: with none left, jobs would wait
    # for resources forever instead of failing with the refusal's message.
    if exclude_refused and report.accepted and report.refused:
        accepted = {r.executor_id for r in report.accepted}
        for bad in dict.fromkeys(r.executor_id for r in report.refused):
            if bad in ids and bad not in accepted and _kill_executor(sc, bad):
                report.excluded.append(bad)
    report.seconds = time.monotonic() - t0
    return report


def _run_limited(sc: Any, job: Any, seconds: float) -> None:
    """Run ``job`` in the sweep's job group; cancel it if it runs past ``seconds``."""
    sc.setJobGroup(SWEEP_GROUP, "ppml: attestation sweep (one probe per executor)", True)
    timer = threading.Timer(max(0.0, seconds), _cancel_quietly, (sc,))
    timer.daemon = True
    timer.start()
    try:
        job()
    finally:
        timer.cancel()
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)
        sc.setLocalProperty("spark.job.interruptOnCancel", None)


def _cancel_quietly(sc: Any) -> None:
    with contextlib.suppress(Exception):  # best-effort: the context may already be gone
        sc.cancelJobGroup(SWEEP_GROUP)


def _kill_executor(sc: Any, executor_id: str) -> bool:
    try:
        return bool(sc._jsc.sc().killExecutor(executor_id))
    except Exception:  # best-effort: a cluster manager may not support killing executors
        return False


# -- connect / stop ---------------------------------------------------------------


def _default_keys() -> KeySource:
    from ppml_kernel.keys.store import default_store

    return default_store()


def _load_policy(policy: Policy | str | os.PathLike[str] | None) -> Policy | None:
    if policy is None:
        return None
    from ppml_kernel.attestation import Policy, PolicyError

    if isinstance(policy, Policy):
        return policy
    try:
        return Policy.load(policy)
    except PolicyError as exc:
        raise ConnectError(str(exc)) from None


def _default_broker_host(master: str, conf: dict[str, str]) -> str:
    if conf.get("spark.driver.host"):
        return conf["spark.driver.host"]
    if master.startswith("local"):
        return "127.0.0.1"
    host = master.split("://", 1)[-1].split(",")[0].rsplit(":", 1)[0].strip("[]")
    if host in ("127.0.0.1", "localhost", "::1"):
        return "127.0.0.1"
    import socket

    # The address this machine uses to reach the master: executors reach the driver there.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, 7077))
            return s.getsockname()[0]
        except OSError:
            return socket.gethostbyname(socket.gethostname())


def _stop_foreign_context(notes: list[str]) -> None:
    from pyspark import SparkContext

    active = SparkContext._active_spark_context
    if active is not None:
        notes.append(f"stopped the previous Spark session ({active.master}, "
                     f"{active.applicationId}): its settings were not these")
        active.stop()


def connect(
    master: str,
    *,
    policy: Policy | str | os.PathLike[str] | None = None,
    conf: dict[str, str] | None = None,
    attester: Attester | None = None,
    keys: KeySource | None = None,
    auth_secret: str | None = None,
    secret_file: str | None = None,
    broker_host: str | None = None,
    broker_port: int = 0,
    attest: bool = True,
    exclude_refused: bool = True,
    expected_executors: int | None = None,
    sweep_timeout: float = 60.0,
    app_name: str = "ppml",
    audit_path: str | os.PathLike[str] | None = None,
    log_level: str = "ERROR",
) -> ClusterSession:
    """Start the key broker and a hardened SparkSession on ``master``; sweep the executors.

    ``policy`` (a :class:`Policy` or a JSON file) is what executors must satisfy; by default
    they must run this driver's own measurement, simulated only if the driver is.
    ``conf`` adds or overrides Spark settings (never the secret: use ``auth_secret``,
    ``secret_file`` or ``$PPML_SPARK_AUTH_SECRET_FILE``). A running local cluster from
    :mod:`ppml_kernel.spark.localcluster` supplies its secret itself.
    """
    global _CURRENT
    t0 = time.perf_counter()
    user_conf = {str(k): str(v) for k, v in (conf or {}).items()}
    if any(k.startswith(AUTH_SECRET) for k in user_conf):
        raise ConnectError(
            "do not pass the RPC secret as a setting (it would end up in history and on "
            "command lines): use --secret-file FILE or $" + ENV_SECRET_FILE
        )
    from ppml_kernel.tee import AttesterError, get_attester

    try:
        attester = attester or get_attester()
        measurement = own_measurement(attester)
    except AttesterError as exc:
        raise ConnectError(f"the driver cannot attest: {exc}") from None
    cluster_policy = _load_policy(policy) or default_cluster_policy(attester, measurement)
    drv_policy = driver_policy_for(cluster_policy, measurement, attester.simulated)
    secret, secret_origin = resolve_secret(master, auth_secret, secret_file)

    with _CURRENT_LOCK:
        if _CURRENT is not None:
            _CURRENT.stop()
        import pyspark
        from pyspark import SparkConf, SparkContext
        from pyspark.sql import SparkSession

        notes: list[str] = []
        _stop_foreign_context(notes)

        settings = driver_settings(pyspark.__version__, master)
        if master.startswith("spark://"):
            from ppml_kernel.spark.localcluster import cluster_for

            cluster = cluster_for(master)
            if cluster is not None:
                settings.update(cluster.app_conf())
        if master.startswith("local") or (master.startswith("spark://") and
                                           "PYSPARK_PYTHON" not in os.environ):
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        settings.update(user_conf)

        from ppml_kernel.keys.broker.attested import BrokerError, KeyBroker
        from ppml_kernel.keys.broker.audit import AuditLog

        host = broker_host or _default_broker_host(master, settings)
        broker = KeyBroker(cluster_policy, keys if keys is not None else _default_keys(),
                           attester, host=host, port=broker_port, audit=AuditLog(audit_path))
        try:
            broker.start()
        except BrokerError as exc:
            raise ConnectError(str(exc)) from None
        settings.update({
            f"spark.executorEnv.{P.ENV_BROKER}": broker.address,
            f"spark.executorEnv.{P.ENV_BROKER_ID}": broker.fingerprint,
            f"spark.executorEnv.{P.ENV_KEYSOURCE}": P.KEYSOURCE_NAME,
            f"spark.executorEnv.{P.ENV_DRIVER_POLICY}": json.dumps(drv_policy.to_dict(),
                                                                   sort_keys=True),
        })

        try:
            t1 = time.perf_counter()
            # Start the JVM with nothing secret on its command line, then set the secret
            # through py4j (pyspark passes a pre-gateway SparkConf as --conf arguments).
            from ppml_kernel.spark.session import ensure_jvm, forget_local_readers, loadable_only

            native = _native_readers(master, settings)
            # quiet: its start-up warnings and logs go to the Spark log file; the jar on
            # the driver's class path (Hadoop must load a listed codec there too)
            ensure_jvm({k: v for k, v in native.items() if k == DRIVER_CLASSPATH})
            forget_local_readers()  # executors get keys only through attestation
            for key, value in loadable_only(native).items():
                settings[key] = value if key == JARS else settings.get(key, value)
            spark_conf = SparkConf()
            spark_conf.setMaster(master).setAppName(app_name)
            for key, value in settings.items():
                spark_conf.set(key, value)
            if secret is not None:
                _hold_secret(SparkContext._jvm, secret)
                spark_conf.set(AUTH_SECRET, SECRET_PLACEHOLDER)
            sc = SparkContext(conf=spark_conf)
            sc.setLogLevel(log_level)
            spark = SparkSession.builder.getOrCreate()
            session_seconds = time.perf_counter() - t1
        # boundary: starting Spark (JVM, py4j, cluster manager) fails in any way; the
        # broker is stopped and the user gets one line
        except Exception as exc:
            broker.stop()
            raise ConnectError(f"Spark did not start on {master}: {_first_line(exc)}") from None

        effective = {k: v for k, v in sc.getConf().getAll() if k != AUTH_SECRET}
        report = SecurityReport.from_conf(
            effective, master=master, secret_origin=secret_origin,
            broker=broker.address, policy_summary="executors must attest: "
            + describe_policy(cluster_policy),
        )
        session = ClusterSession(
            spark=spark, master=master, broker=broker, policy=cluster_policy,
            driver_policy=drv_policy, security=report, simulated=bool(attester.simulated),
            session_seconds=session_seconds, notes=notes,
        )
        _CURRENT = session
    from ppml_kernel.spark.session import announce

    announce(spark)  # binds `spark`/`sc` and shows the sweep's jobs under the cell
    if attest:
        try:
            session.attest_executors(exclude_refused=exclude_refused, timeout=sweep_timeout,
                                     expected=expected_executors or _expected(master))
        # boundary: the sweep runs Spark jobs; the session stays usable, say why no table
        except Exception as exc:
            session.notes.append(f"attestation sweep failed: {_first_line(exc)}")
    session.connect_seconds = time.perf_counter() - t0
    return session


def _native_readers(master: str, settings: Mapping[str, str]) -> dict[str, str]:
    """Spark's own Parquet and CSV readers for encrypted data, keys through each
    executor's key agent, which attests exactly like a Python worker
    (:mod:`ppml_kernel.keys.broker.agent`). Not for ``local[N]``: its executors are the
    driver JVM, which would ask the kernel's local broker without attesting; there the
    Python workers attest (the data-source path)."""
    if master.startswith("local"):
        return {}
    from ppml_kernel.spark.session import native_reader_conf

    python = (settings.get("spark.pyspark.python") or os.environ.get("PYSPARK_PYTHON")
              or sys.executable)
    native = native_reader_conf(key_agent=python)
    jar = native.pop(EXECUTOR_CLASSPATH, None)
    if jar:  # shipped by the driver (authenticated RPC): executors need no copy of their own
        jars = [j for j in settings.get(JARS, "").split(",") if j.strip()]
        native[JARS] = ",".join([*jars, jar] if jar not in jars else jars)
    return native


def _hold_secret(jvm: Any, secret: str) -> None:
    """Give the driver JVM the RPC secret where Spark looks first, outside every conf.

    ``SecurityManager.getSecretKey`` reads the current user's Hadoop credentials
    (alias ``sparkCookie``) before ``spark.authenticate.secret``; standalone mode only
    checks that the setting exists, so the conf carries a placeholder and the secret
    never shows in ``getConf()``, the SQL conf, the event log or a command line.
    """
    hadoop = jvm.org.apache.hadoop
    creds = hadoop.security.Credentials()
    creds.addSecretKey(hadoop.io.Text(SECRET_ALIAS), bytearray(secret.encode("utf-8")))
    hadoop.security.UserGroupInformation.getCurrentUser().addCredentials(creds)


def _expected(master: str) -> int | None:
    if master.startswith("local"):
        return 1
    if master.startswith("spark://"):
        from ppml_kernel.spark.localcluster import cluster_for

        cluster = cluster_for(master)
        if cluster is not None:
            return sum(1 for w in cluster.workers if w.alive())
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def current() -> ClusterSession | None:
    """The session made by the last :func:`connect`, if it is still running."""
    return _CURRENT


def stop() -> bool:
    """Stop the current session and its broker; False if there was none."""
    with _CURRENT_LOCK:
        session = _CURRENT
        if session is None:
            return False
        session.stop()
        return True


def status() -> ClusterStatus | None:
    session = _CURRENT
    return session.status() if session is not None else None
