"""Key brokers: a worker gets data keys, the KEK stays where it is.

* :mod:`~ppml_kernel.keys.broker.core` - transport-free: grants, unwraps, wraps, audits
* :mod:`~ppml_kernel.keys.broker.local` - Unix socket + peer credentials (local Spark)
* :mod:`~ppml_kernel.keys.broker.attested` - attested executors over HTTP
  (:mod:`~ppml_kernel.keys.broker.protocol`, :mod:`~ppml_kernel.keys.broker.sessions`,
  :mod:`~ppml_kernel.keys.broker.http`, :mod:`~ppml_kernel.keys.broker.audit`)
* :mod:`~ppml_kernel.keys.broker.client` - the executors' client of the attested broker
"""
