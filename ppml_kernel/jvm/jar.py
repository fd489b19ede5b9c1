"""The kernel's JVM side as one small jar: compiled once against pyspark's own jars.

``java/ppml/`` holds what Spark's JVM needs to read our encrypted data natively:

* ``BrokerClient`` - the JVM's one client of the kernel's local key broker (or, on an
  attested cluster's executors, of the executor's key agent: ``KeyAgent``);
* ``BrokerKmsClient`` - Parquet modular encryption's KMS client (keys via the broker);
* ``AeadCodec`` / ``AeadInputStream`` - ``ppml-aead/1`` files as a Hadoop codec, so
  Spark's own CSV reader decrypts them without a Python worker per task.

The jar is built once with ``javac`` (cached under ``$XDG_CACHE_HOME/ppml-kernel/jars``,
named by a digest of the sources and the pyspark version), or prebuilt and named by
``$PPML_JVM_JAR`` in enclave images. No ``javac``: :func:`ppml_jar` returns None and
every reader keeps its Python path.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib.resources import files
from pathlib import Path

ENV_JAR = "PPML_JVM_JAR"
_SOURCES = ("BrokerClient.java", "BrokerKmsClient.java", "AeadCodec.java",
            "AeadInputStream.java", "AeadFileError.java", "GcmWarmUp.java", "KeyAgent.java")


def _sources() -> dict[str, bytes]:
    root = files("ppml_kernel.jvm").joinpath("java/ppml")
    return {name: root.joinpath(name).read_bytes() for name in _SOURCES}


def _spark_jars() -> Path:
    import pyspark

    home = os.environ.get("SPARK_HOME")
    if home and (Path(home) / "jars").is_dir():
        return Path(home) / "jars"
    return Path(pyspark.__file__).parent / "jars"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ppml-kernel" / "jars"


def ppml_jar(build: bool = True) -> Path | None:
    """The jar: prebuilt (``$PPML_JVM_JAR``), cached, or compiled now; else None."""
    prebuilt = os.environ.get(ENV_JAR)
    if prebuilt:
        return Path(prebuilt) if Path(prebuilt).is_file() else None
    import pyspark

    sources = _sources()
    h = hashlib.sha256(pyspark.__version__.encode())
    for name, text in sorted(sources.items()):
        h.update(name.encode() + b"\0" + text)
    jar = cache_dir() / f"ppml-jvm-{h.hexdigest()[:16]}.jar"
    if jar.is_file():
        return jar
    javac, jar_tool = shutil.which("javac"), shutil.which("jar")
    if not build or not javac or not jar_tool:
        return None
    jar.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ppml-jvm-") as tmp:
        src_dir = Path(tmp) / "ppml"
        src_dir.mkdir()
        for name, text in sources.items():
            (src_dir / name).write_bytes(text)
        classes = Path(tmp) / "classes"
        try:
            subprocess.run([javac, "--release", "17", "-nowarn", "-cp",
                            str(_spark_jars() / "*"), "-d", str(classes),
                            *(str(src_dir / n) for n in sorted(sources))],
                           check=True, capture_output=True, timeout=300)
            tmp_jar = jar.with_suffix(f".{os.getpid()}.tmp")
            subprocess.run([jar_tool, "cf", str(tmp_jar), "-C", str(classes), "."],
                           check=True, capture_output=True, timeout=120)
        except (OSError, subprocess.SubprocessError):
            return None
        os.replace(tmp_jar, jar)
    return jar


def classpath_conf(jar: Path) -> dict[str, str]:
    """Settings that put the jar on the driver's and the executors' classpath."""
    return {
        "spark.driver.extraClassPath": str(jar),
        "spark.executor.extraClassPath": str(jar),
    }
