"""Spark for the kernel: the session, and (cluster issue) attested executors and key broker."""
