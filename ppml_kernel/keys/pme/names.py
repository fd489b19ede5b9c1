"""What Spark's own Parquet reader/writer needs to use PME with our keys (no pyspark import).

Spark ships Parquet Modular Encryption (``PropertiesDrivenCryptoFactory``); its KMS
client ``ppml.BrokerKmsClient`` (built by :mod:`ppml_kernel.jvm.jar`) asks the local
key broker (:mod:`ppml_kernel.keys.broker.local`; on an attested cluster's executors,
the executor's key agent, :mod:`ppml_kernel.keys.broker.agent`) like the Python workers do.
The class and option names are the JVM's wire names; both the dataset layer's writers
and the Spark session settings read them from here.
"""

from __future__ import annotations

CLASS_NAME = "ppml.BrokerKmsClient"
FACTORY = "org.apache.parquet.crypto.keytools.PropertiesDrivenCryptoFactory"
# The KMS instance id in PME key material; pyarrow's writer (data/parquet.py) uses it too.
KMS_INSTANCE = "ppml-kernel"


def pme_conf() -> dict[str, str]:
    """Spark settings that make ``ppml.BrokerKmsClient`` Parquet's KMS client."""
    return {
        "spark.hadoop.parquet.crypto.factory.class": FACTORY,
        "spark.hadoop.parquet.encryption.kms.client.class": CLASS_NAME,
    }


def native_pme_enabled(spark: object) -> bool:
    """Whether this session reads/writes PME Parquet natively (through the broker)."""
    try:
        conf = spark.sparkContext.getConf()  # type: ignore[attr-defined]
        return conf.get("spark.hadoop.parquet.encryption.kms.client.class") == CLASS_NAME
    except Exception:  # best-effort probe: a stopped context or a stand-in session
        return False


def write_options(key_id: str) -> dict[str, str]:
    """Per-write options: every column and the footer encrypted under ``key_id``."""
    return {
        "parquet.encryption.uniform.key": key_id,
        "parquet.encryption.plaintext.footer": "false",
        "parquet.encryption.data.key.length.bits": "256",
        "parquet.encryption.kek.length.bits": "256",
        "parquet.encryption.double.wrapping": "true",
        "parquet.encryption.key.material.store.internally": "true",
        "parquet.encryption.kms.instance.id": KMS_INSTANCE,
    }
