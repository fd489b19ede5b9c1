"""Run the kernel inside an Occlum SGX enclave.

``config`` writes Occlum.json (what is measured into MRENCLAVE), ``sizing`` turns a
workload into enclave memory and thread limits, ``spark_conf`` holds the Occlum-safe
Spark settings, ``reference`` writes the reference values a verifier pins,
``launcher`` is the only entry point the enclave accepts, ``kernelspec`` writes the
kernel.json that names the ``occlum`` kernel provisioner, and ``provisioner`` is that
provisioner (jupyter_client starts each kernel with ``occlum run`` through it).
"""
