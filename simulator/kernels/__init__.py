"""Kernel models: GEMM, memory-bound and attention kernels as mappings onto a device's spatial machine."""
