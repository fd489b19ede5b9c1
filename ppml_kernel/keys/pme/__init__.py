"""Parquet modular encryption's KMS glue: Spark's Parquet asks our key broker for keys.

* :mod:`~ppml_kernel.keys.pme.names` - class and option names (no pyspark import)
* :mod:`~ppml_kernel.keys.pme.kms` - pyarrow's KMS client and the wrapped-key format

Spark's KMS client (``ppml.BrokerKmsClient``, same format) is Java and is built with the
rest of the kernel's JVM side by :mod:`ppml_kernel.jvm.jar`.
"""
