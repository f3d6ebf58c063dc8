"""Test helpers for the segmentation tests."""
import jax
import jax.numpy as jnp
import numpy as np


def random_variables(model, input_shape, seed: int = 0):
  """Variables for `model` drawn with NumPy (He-scaled normal kernels, BN identity), without
  compiling `model.init`: jitted threefry initialisation of a U-Net takes tens of seconds to
  compile on a loaded 2-core machine, and the tests only need some weights."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(input_shape))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name in ('var', 'scale'):
      return np.ones(leaf.shape, np.float32)
    if name in ('mean', 'bias'):
      return (0.1 * rng.normal(size=leaf.shape)).astype(np.float32) if name == 'bias' else \
          np.zeros(leaf.shape, np.float32)
    fan_in = int(np.prod(leaf.shape[:-1])) or 1
    return (rng.normal(size=leaf.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)
