"""U-Net (Ronneberger, Fischer & Brox 2015, "U-Net: Convolutional Networks for Biomedical Image
Segmentation") with padded 3x3 convolutions, so that the logits have the input's size.

Contracting path: `depth` levels of two 3x3 conv-(BatchNorm)-ReLU blocks, each followed by a
2x2 max pooling; widths base_width * 2^level (the paper: 64, 128, 256, 512). Bottleneck: two
3x3 blocks of base_width * 2^depth (1024), then dropout (`dropout_rate`; the paper's "drop-out
layers at the end of the contracting path"). Expanding path, per level from the deepest:
2x upsampling that halves the channels, concatenation with the contracting path's map of that
level (the skip first), two 3x3 blocks. A 1x1 convolution gives the logits.

Changes from the paper, as in the common re-implementations: padding 1 keeps every 3x3
convolution's size (the paper's unpadded convolutions shrink a 572x572 tile to 388x388), so the
input's height and width must be multiples of 2^depth (`size_multiple`) and no crop is needed
for the skips; optional BatchNorm after each convolution (the convolutions then have no bias).

`depth` counts the poolings: the paper's network is depth=4 (5 resolution levels).
`upsampling='transpose'`: a learned 2x2 transposed convolution with stride 2 (the paper's
"up-convolution"), computed as a 1x1 convolution to 4x the channels followed by a
depth-to-space rearrangement (the two are the same map: the 2x2 windows do not overlap), so
that it runs on the models' convolution (research/models/conv.py). `'bilinear'`: fixed bilinear
2x upsampling (jax.image.resize, half-pixel centres) then a 1x1 convolution halving the
channels. Convolution weights start as He et al.'s normal (std sqrt(2 / fan_in)), as the paper
prescribes.

Input (N, H, W, C) float; output float32 logits (N, H, W, num_classes).
`return_features=True` also returns the named maps encoder0..encoder{depth-1}, bottleneck,
decoder{depth-1}..decoder0.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.errors import ConfigError, InputShapeError
from research.models.conv import Conv, conv_general_dilated
from research.models.layers import max_pool
from research.models.norm import BatchNorm

UPSAMPLING = ('transpose', 'bilinear')
he_normal = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


class DoubleConv(nn.Module):
  """Two 3x3 (padding 1) convolution -> [BatchNorm] -> ReLU blocks."""
  features: int
  batch_norm: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    for i in (1, 2):
      x = Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=not self.batch_norm,
               kernel_init=he_normal, dtype=self.dtype, name=f'conv{i}')(x)
      if self.batch_norm:
        x = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                      relu=True, name=f'bn{i}')(x)
      else:
        x = nn.relu(x)
    return x


class UpConv2x2(nn.Module):
  """A 2x2 transposed convolution with stride 2: out[2i + a, 2j + b] = x[i, j] @ kernel[a, b]
  + bias. Kernel (2, 2, C_in, features), as torch's ConvTranspose2d(C_in, features, 2, 2)
  weight (C_in, features, 2, 2) transposed to (2, 2, C_in, features)."""
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    n, h, w, c = x.shape
    std = math.sqrt(2.0 / c)  # each output pixel sees C_in inputs (one tap)
    kernel = self.param('kernel', lambda key, shape: std * jax.random.normal(key, shape),
                        (2, 2, c, self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    as_1x1 = kernel.transpose(2, 0, 1, 3).reshape(1, 1, c, 4 * self.features)
    y = conv_general_dilated(x.astype(self.dtype), as_1x1.astype(self.dtype), (1, 1), 'VALID',
                             dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    y = y.reshape(n, h, w, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, 2 * h, 2 * w, self.features) + bias.astype(self.dtype)


class UNet(nn.Module):
  num_classes: int = 2
  depth: int = 4
  base_width: int = 64
  batch_norm: bool = True
  upsampling: str = 'transpose'
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @property
  def size_multiple(self) -> int:
    """Input heights and widths must be multiples of this (2^depth)."""
    return 2 ** self.depth

  def _check(self, x):
    if self.depth < 1 or self.base_width < 1:
      raise ConfigError(f'U-Net depth and base_width must be >= 1; got depth={self.depth}, '
                        f'base_width={self.base_width}')
    if self.upsampling not in UPSAMPLING:
      raise ConfigError(f'U-Net upsampling {self.upsampling!r}; known: {", ".join(UPSAMPLING)}')
    if x.ndim != 4:
      raise InputShapeError(f'U-Net takes images shaped (batch, height, width, channels); got '
                            f'shape {tuple(x.shape)}')
    m = self.size_multiple
    if x.shape[1] % m or x.shape[2] % m:
      fix = lambda s: f'{s}' if s % m == 0 else f'{s // m * m or m} or {(s // m + 1) * m}'
      raise InputShapeError(
          f'U-Net with depth {self.depth} needs height and width divisible by 2^{self.depth} = '
          f'{m}; got {x.shape[1]}x{x.shape[2]}: crop or pad to {fix(x.shape[1])} x '
          f'{fix(x.shape[2])} (or use tiled inference, research/tasks/segmentation/tiling.py)')

  @nn.compact
  def __call__(self, x, *, train: bool = False, return_features: bool = False):
    self._check(x)
    features, skips = {}, []
    width = lambda level: self.base_width * 2 ** level
    x = x.astype(self.dtype)
    for level in range(self.depth):
      x = DoubleConv(width(level), self.batch_norm, self.dtype, name=f'encoder{level}')(x, train=train)
      features[f'encoder{level}'] = x
      skips.append(x)
      x = max_pool(x, (2, 2))
    x = DoubleConv(width(self.depth), self.batch_norm, self.dtype, name='bottleneck')(x, train=train)
    features['bottleneck'] = x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    for level in reversed(range(self.depth)):
      if self.upsampling == 'transpose':
        x = UpConv2x2(width(level), self.dtype, name=f'upsample{level}')(x)
      else:
        n, h, w, c = x.shape
        x = jax.image.resize(x, (n, 2 * h, 2 * w, c), 'bilinear')
        x = Conv(width(level), (1, 1), kernel_init=he_normal, dtype=self.dtype,
                 name=f'upsample{level}')(x)
      x = jnp.concatenate([skips[level], x], axis=-1)
      x = DoubleConv(width(level), self.batch_norm, self.dtype, name=f'decoder{level}')(x, train=train)
      features[f'decoder{level}'] = x
    logits = Conv(self.num_classes, (1, 1), dtype=self.dtype, name='logits')(x).astype(jnp.float32)
    return (logits, features) if return_features else logits
