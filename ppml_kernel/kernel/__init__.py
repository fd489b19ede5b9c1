"""The Jupyter surface: the kernel class and its kernelspec."""
