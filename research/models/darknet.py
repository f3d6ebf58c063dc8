"""A small Darknet-style backbone (after YOLOv3's Darknet-53, Redmon & Farhadi 2018), sized for
small images on a CPU: 3x3 conv-BatchNorm-leaky ReLU (slope 0.1) layers, a stride-2 3x3
convolution at the start of each stage, then `depths[k]` residual blocks (1x1 conv to half the
channels, 3x3 conv back, added to the input).

Named features: 'stem' (full resolution), 'stage1'... (each half the previous resolution, so
stage k has stride 2^k), 'pre_logits' (global average pool); `logits` come from a dense layer
on it. `Detector(DarknetTiny(...))` puts a YOLO head on the last stage (research/models/
blocks.py). With the defaults (5 widths) the last stage has stride 16; `widths=(16, 32, 64,
128)` ends at stride 8 (a 12x12 grid on 96x96 images).
"""
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from research.errors import ConfigError
from research.models.blocks import ConvBNAct
from research.models.layers import check_images


class DarknetResidual(nn.Module):
  """x + conv3x3(conv1x1(x)), both conv-BN-leaky ReLU, the 1x1 halving the channels."""
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    channels = x.shape[-1]
    y = ConvBNAct(max(channels // 2, 1), 1, activation='leaky_relu', dtype=self.dtype,
                  name='reduce')(x, train=train)
    y = ConvBNAct(channels, 3, activation='leaky_relu', dtype=self.dtype,
                  name='expand')(y, train=train)
    return x + y


class DarknetTiny(nn.Module):
  num_classes: int = 1000
  widths: Sequence[int] = (16, 32, 64, 128, 256)  # stem, then one stage each
  depths: Sequence[int] = (1, 1, 1, 1)           # residual blocks per stage
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False, return_features: bool = False):
    if len(self.depths) != len(self.widths) - 1:
      raise ConfigError(f'DarknetTiny needs one depth per stage: {len(self.widths) - 1} stages '
                        f'(widths={tuple(self.widths)}) but depths={tuple(self.depths)}')
    check_images(x, 'DarknetTiny', min_size=2 ** (len(self.widths) - 1))
    x = x.astype(self.dtype)
    act = dict(activation='leaky_relu', dtype=self.dtype)
    x = ConvBNAct(self.widths[0], 3, **act, name='stem')(x, train=train)
    features = {'stem': x}
    for k, (width, depth) in enumerate(zip(self.widths[1:], self.depths)):
      x = ConvBNAct(width, 3, strides=2, **act, name=f'stage{k + 1}_down')(x, train=train)
      for b in range(depth):
        x = DarknetResidual(self.dtype, name=f'stage{k + 1}_block{b + 1}')(x, train=train)
      features[f'stage{k + 1}'] = x
    x = jnp.mean(x, axis=(1, 2))
    features['pre_logits'] = x
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='logits')(x).astype(jnp.float32)
    return (logits, features) if return_features else logits
