"""The Java KMS client for Spark's Parquet encryption (PME): built once, keys via the broker.

Spark ships Parquet Modular Encryption (``PropertiesDrivenCryptoFactory``) but no usable
KMS client. ``java/ppml/BrokerKmsClient.java`` is one that asks the kernel's key broker,
exactly like the Python workers do; this module compiles it once into a small jar
(cached under ``$XDG_CACHE_HOME/ppml-kernel/jars``, or prebuilt and named by
``$PPML_KMS_JAR`` in enclave images) and returns the Spark settings that enable it.

With it, ``spark.read.parquet`` reads PME files natively: vectorised, with column
pruning and row counts from footers, at the speed of plaintext Parquet.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib.resources import files
from pathlib import Path

from ppml_kernel.keys.pme.names import CLASS_NAME, FACTORY

ENV_JAR = "PPML_KMS_JAR"


def _source() -> bytes:
    return files("ppml_kernel.keys.pme").joinpath("java/ppml/BrokerKmsClient.java").read_bytes()


def _spark_jars() -> Path:
    import pyspark

    home = os.environ.get("SPARK_HOME")
    if home and (Path(home) / "jars").is_dir():
        return Path(home) / "jars"
    return Path(pyspark.__file__).parent / "jars"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ppml-kernel" / "jars"


def kms_jar(build: bool = True) -> Path | None:
    """The KMS client jar: prebuilt (``$PPML_KMS_JAR``), cached, or compiled now; else None."""
    prebuilt = os.environ.get(ENV_JAR)
    if prebuilt:
        return Path(prebuilt) if Path(prebuilt).is_file() else None
    import pyspark

    src = _source()
    digest = hashlib.sha256(src + pyspark.__version__.encode()).hexdigest()[:16]
    jar = cache_dir() / f"ppml-kms-{digest}.jar"
    if jar.is_file():
        return jar
    javac, jar_tool = shutil.which("javac"), shutil.which("jar")
    if not build or not javac or not jar_tool:
        return None
    jar.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ppml-kms-") as tmp:
        src_path = Path(tmp) / "ppml" / "BrokerKmsClient.java"
        src_path.parent.mkdir()
        src_path.write_bytes(src)
        classes = Path(tmp) / "classes"
        try:
            subprocess.run([javac, "--release", "17", "-nowarn", "-cp",
                            str(_spark_jars() / "*"), "-d", str(classes), str(src_path)],
                           check=True, capture_output=True, timeout=300)
            tmp_jar = jar.with_suffix(f".{os.getpid()}.tmp")
            subprocess.run([jar_tool, "cf", str(tmp_jar), "-C", str(classes), "."],
                           check=True, capture_output=True, timeout=120)
        except (OSError, subprocess.SubprocessError):
            return None
        os.replace(tmp_jar, jar)
    return jar


def spark_conf(jar: Path) -> dict[str, str]:
    """Settings that put the client on the classpath and make it Parquet's KMS client."""
    return {
        "spark.driver.extraClassPath": str(jar),
        "spark.executor.extraClassPath": str(jar),
        "spark.hadoop.parquet.crypto.factory.class": FACTORY,
        "spark.hadoop.parquet.encryption.kms.client.class": CLASS_NAME,
    }

