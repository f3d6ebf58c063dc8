"""The CIFAR ResNets of He et al. 2016 (§4.2): depth 6n + 2, stages of 16/32/64 channels.

Option-A shortcuts: where a stage halves the resolution and doubles the channels, the
shortcut subsamples by 2 and pads the new channels with zeros, so shortcuts add no
parameters (ResNet-20 has 269,722). Global average pooling before the classifier lets any
input of at least 4x4 through.
"""
import functools

import flax.linen as nn
import jax.numpy as jnp

from research.errors import ConfigError
from research.models.conv import Conv
from research.models.layers import check_images
from research.models.norm import BatchNorm
from research.models.residual import materialize, relu


class BasicBlock(nn.Module):
  features: int
  strides: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = functools.partial(BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype)
    conv = functools.partial(Conv, kernel_size=(3, 3), use_bias=False, dtype=self.dtype,
                             kernel_init=nn.initializers.kaiming_normal())
    y = norm(relu=True)(conv(self.features, strides=self.strides, padding=((1, 1), (1, 1)))(x))
    y = norm()(conv(self.features, padding=((1, 1), (1, 1)))(y))
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:  # option A: subsample + zero-pad
      shortcut = x[:, ::self.strides, ::self.strides, :]
      extra = self.features - x.shape[-1]
      shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
    return materialize(relu(y + shortcut))


class CifarResNet(nn.Module):
  depth: int = 20
  num_classes: int = 10
  width: int = 16
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False, return_features: bool = False):
    if (self.depth - 2) % 6 or self.depth < 8:
      raise ConfigError(f'CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110, ...); got {self.depth}')
    check_images(x, f'ResNet-{self.depth}', min_size=4)
    blocks_per_stage = (self.depth - 2) // 6
    x = x.astype(self.dtype)
    x = Conv(self.width, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, dtype=self.dtype,
             kernel_init=nn.initializers.kaiming_normal(), name='stem_conv')(x)
    x = materialize(BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                              dtype=self.dtype, relu=True, name='stem_bn')(x))
    features = {'stem': x}
    for stage in range(3):
      for block in range(blocks_per_stage):
        strides = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(self.width * 2 ** stage, strides, self.dtype,
                       name=f'stage{stage + 1}_block{block + 1}')(x, train=train)
      features[f'stage{stage + 1}'] = x
    x = jnp.mean(x, axis=(1, 2))
    features['pre_logits'] = x
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='logits')(x).astype(jnp.float32)
    return (logits, features) if return_features else logits


ResNet20 = functools.partial(CifarResNet, depth=20)
ResNet32 = functools.partial(CifarResNet, depth=32)
ResNet44 = functools.partial(CifarResNet, depth=44)
ResNet56 = functools.partial(CifarResNet, depth=56)
ResNet110 = functools.partial(CifarResNet, depth=110)
