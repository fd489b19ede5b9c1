"""Parquet modular encryption's KMS glue: Spark's Parquet asks our key broker for keys.

* :mod:`~ppml_kernel.keys.pme.names` - class and option names (no pyspark import)
* :mod:`~ppml_kernel.keys.pme.kms` - pyarrow's KMS client and the wrapped-key format
* :mod:`~ppml_kernel.keys.pme.jar` - builds ``java/ppml/BrokerKmsClient.java`` (Spark's
  KMS client, same format) into a jar
"""
