"""A plain IPython kernel with the ppml-attest/1 channel installed over the test PKI.

Used by tests/test_channel_kernel.py (and the browser end-to-end test) until the
project's PPMLKernel is wired in; launched as a real kernel through jupyter_client.
"""

from __future__ import annotations

import os

import dcap_synth  # tests/ is on PYTHONPATH (see the kernelspec the tests write)
from ipykernel.ipkernel import IPythonKernel
from ipykernel.kernelapp import IPKernelApp

from ppml_kernel.channel.jupyter import install


class ChannelTestKernel(IPythonKernel):
    implementation = "ppml-channel-test"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        now = int(os.environ.get("PPML_TEST_PKI_NOW", "0")) or None
        pki = dcap_synth.Pki(now=now) if now else None
        install(self, dcap_synth.SynthAttester(pki), kernel_info={"implementation": "ppml-test"})


if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=ChannelTestKernel)
