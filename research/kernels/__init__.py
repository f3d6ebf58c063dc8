"""Compiled CPU kernels called from JAX through XLA's FFI (built on first use)."""
