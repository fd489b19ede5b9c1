"""Spark settings that a driver inside Occlum needs, as one table.

Occlum has no ``fork``: PySpark's daemon forks workers, so ``spark.python.use.daemon``
must be false, and the JVM must launch processes with ``vfork``. The other settings
save EPC (one malloc arena, processor counts pinned so the JVM and Netty do not size
thread pools from the host's cores) or close what an enclave should not expose (the
Spark web UI has no authentication). The image writes these to
``$SPARK_CONF_DIR/spark-defaults.conf``; the kernel's Spark session can import
:data:`OCCLUM_SPARK_CONF` to apply the same settings explicitly.
"""

from __future__ import annotations

from ppml_kernel.occlum.sizes import MiB

JVM_FLAGS = (
    "-XX:-UseCompressedOops",  # Occlum's anchors: compressed oops need low addresses
    "-Djdk.lang.Process.launchMechanism=vfork",  # no fork inside Occlum
    "-Dos.name=Linux",  # Occlum's demos pin it; the LibOS's uname is not the host's
)

# Settings that do not depend on sizing.
OCCLUM_SPARK_CONF: dict[str, str] = {
    "spark.python.use.daemon": "false",
    "spark.executorEnv.MALLOC_ARENA_MAX": "1",
    "spark.ui.enabled": "false",
}


def jvm_options(cores: int) -> str:
    """JVM flags for a driver or executor inside Occlum with ``cores`` cores."""
    return " ".join(
        (
            *JVM_FLAGS,
            f"-XX:ActiveProcessorCount={cores}",
            f"-Dio.netty.availableProcessors={cores}",
        )
    )


def spark_defaults(*, driver_memory: int, cores: int, python: str) -> dict[str, str]:
    """The full ``spark-defaults.conf`` table for the enclave image."""
    options = jvm_options(cores)
    return {
        **OCCLUM_SPARK_CONF,
        "spark.driver.memory": f"{driver_memory // MiB}m",
        "spark.driver.extraJavaOptions": options,
        "spark.executor.extraJavaOptions": options,
        "spark.pyspark.python": python,
        "spark.pyspark.driver.python": python,
    }


def render(conf: dict[str, str]) -> str:
    """``spark-defaults.conf`` text: one ``key value`` pair per line."""
    header = "# Written by `ppml-kernel occlum config`: Occlum-safe Spark settings.\n"
    return header + "".join(f"{key} {value}\n" for key, value in conf.items())
