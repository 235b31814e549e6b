"""Triton kernels and their autograd wrappers. Each kernel file keeps a plain-PyTorch reference beside it.

Kernels know tensors, not methods or the harness. Import them lazily: importing this package does not
import Triton.
"""
