"""``python -m ppml_kernel -f CONNECTION_FILE``: run the PPML kernel (kernelspec argv)."""

from ipykernel.kernelapp import IPKernelApp

from ppml_kernel.kernel.kernel import PPMLKernel

if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=PPMLKernel)
