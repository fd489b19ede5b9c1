"""The kernel's JVM side (Java sources and the one jar built from them); see :mod:`.jar`.

A base module: it imports nothing of ours. What the Java classes mean for each layer
lives with that layer (``keys.pme.names`` for Parquet's KMS client, ``data.codec`` for
the ``ppml-aead/1`` codec); ``spark.session`` puts them together.
"""
