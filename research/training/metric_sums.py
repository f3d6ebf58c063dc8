"""Metrics as sums over examples, so batches and devices combine exactly.

A step returns `{'loss': sum, 'accuracy': sum, ..., 'count': n}`; `finalize` divides by the
count once everything has been added up.
"""
import jax
import jax.numpy as jnp


def add(a: dict | None, b: dict) -> dict:
  return b if a is None else jax.tree.map(jnp.add, a, b)


def finalize(sums: dict) -> dict[str, float]:
  """Means of every summed metric (the count itself is dropped)."""
  count = float(sums['count'])
  return {k: float(v) / max(count, 1.0) for k, v in sums.items() if k != 'count'}
