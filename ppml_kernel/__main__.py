"""``python -m ppml_kernel -f CONNECTION_FILE``: run the PPML kernel (kernelspec argv).

IPython's history is kept in memory only: code of sealed cells must not land in a
file on the host's disk.
"""

import sys

from ipykernel.kernelapp import IPKernelApp

from ppml_kernel.kernel.kernel import PPMLKernel

if __name__ == "__main__":
    IPKernelApp.launch_instance(
        argv=[*sys.argv[1:], "--HistoryManager.hist_file=:memory:"], kernel_class=PPMLKernel
    )
