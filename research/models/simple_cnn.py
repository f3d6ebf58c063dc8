"""A small CNN for digit-sized images: (conv 3x3 - BatchNorm - ReLU - max-pool) x 2, dropout, dense.

The feature maps are average-pooled onto a fixed grid (7x7 by default, the size 28x28 MNIST
reaches, so it is the identity there) before the classifier; any input of at least 4x4
therefore works with the same weights.
"""
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from research.models.conv import Conv
from research.models.layers import adaptive_avg_pool, check_images, max_pool
from research.models.norm import BatchNorm


class SimpleCNN(nn.Module):
  num_classes: int = 10
  features: Sequence[int] = (32, 64)
  dropout_rate: float = 0.5
  grid: Sequence[int] = (7, 7)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False, return_features: bool = False):
    check_images(x, 'SimpleCNN', min_size=2 ** len(self.features))
    x = x.astype(self.dtype)
    captured = {}
    for i, features in enumerate(self.features):
      x = Conv(features, (3, 3), use_bias=False, dtype=self.dtype, name=f'conv{i + 1}')(x)
      x = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                    dtype=self.dtype, relu=True, name=f'bn{i + 1}')(x)
      x = max_pool(x, (2, 2))
      captured[f'stage{i + 1}'] = x
    x = adaptive_avg_pool(x, tuple(self.grid)).reshape((x.shape[0], -1))
    captured['pre_logits'] = x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='logits')(x).astype(jnp.float32)
    return (logits, captured) if return_features else logits
