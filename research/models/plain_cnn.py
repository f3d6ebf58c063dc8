"""Plain CNNs without normalisation layers: convolution - ReLU (- 2x2 max-pool) blocks, then
dense - ReLU layers and a linear classifier, the networks of the adversarial-training papers.

- `madry_cnn` (Madry et al. 2018, the MNIST challenge network): 5x5 convolutions of 32 and 64
  channels with 'SAME' padding, each followed by a 2x2 max-pool, a 1,024-unit dense layer;
  3,274,634 parameters on 28x28x1 inputs with 10 classes.
- `wong_cnn` (Wong & Kolter 2018; Wong, Rice & Kolter 2020's MNIST network): 4x4 convolutions
  of 16 and 32 channels with stride 2 and padding 1, no pooling, a 100-unit dense layer;
  166,406 parameters on 28x28x1 inputs with 10 classes.

Without BatchNorm the model is the same function in training and evaluation, so an attack
computed in eval mode is exactly the one the training step sees. The dense layers flatten the
last feature map, so the input size is fixed by the first call (init).
"""
from collections.abc import Sequence
import functools

import flax.linen as nn
import jax.numpy as jnp

from research.models.conv import Conv
from research.models.layers import check_images, max_pool


class PlainCNN(nn.Module):
  """Input (N, H, W, C) float, normalised as the data pipeline does; output logits (N, classes)
  float32. `padding` is 'SAME', 'VALID' or an int (pixels on every side)."""
  num_classes: int = 10
  features: Sequence[int] = (32, 64)
  kernel_size: int = 5
  strides: int = 1
  padding: str | int = 'SAME'
  pool: bool = True
  hidden: Sequence[int] = (1024,)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False, return_features: bool = False):
    del train  # no dropout or normalisation: the same function in both modes
    check_images(x, 'PlainCNN', min_size=self.kernel_size)
    padding = self.padding if isinstance(self.padding, str) else [(self.padding,) * 2] * 2
    x = x.astype(self.dtype)
    captured = {}
    for i, features in enumerate(self.features):
      x = Conv(features, (self.kernel_size,) * 2, strides=(self.strides,) * 2, padding=padding,
               dtype=self.dtype, name=f'conv{i + 1}')(x)
      x = nn.relu(x)
      if self.pool:
        x = max_pool(x, (2, 2))
      captured[f'stage{i + 1}'] = x
    x = x.reshape((x.shape[0], -1))
    for i, units in enumerate(self.hidden):
      x = nn.relu(nn.Dense(units, dtype=self.dtype, name=f'fc{i + 1}')(x))
    captured['pre_logits'] = x
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='logits')(x).astype(jnp.float32)
    return (logits, captured) if return_features else logits


MadryCNN = functools.partial(PlainCNN, features=(32, 64), kernel_size=5, strides=1,
                             padding='SAME', pool=True, hidden=(1024,))
WongCNN = functools.partial(PlainCNN, features=(16, 32), kernel_size=4, strides=2, padding=1,
                            pool=False, hidden=(100,))
