"""ImageNet ResNets (He et al. 2016) as torchvision builds them (v1.5: the bottleneck's stride
sits on its 3x3 conv). ResNet-18/34 use basic blocks, 50/101/152 bottlenecks.

Layer names follow torchvision's (`layer2_0/downsample_1` is `layer2.0.downsample.1`) so that
its weights convert by name. Global average pooling lets any input of at least 32x32 through.

For dense prediction (research/models/fcn.py): `output_stride=16` or `8` replaces the stride of
the last one or two stages by dilation (atrous convolution; torchvision's
`replace_stride_with_dilation`, DeepLab). The convolution that strided keeps the previous
dilation (`first_dilation`: the bottleneck's conv2, the basic block's conv1, in a stage's first
block), every later 3x3 convolution uses the new one; in eval mode the dilated stages' output
sampled every 2 (or 4) pixels is then the strided network's output. `include_top=False`
drops the pooling and classifier: the model then returns the last stage's feature map.
"""
import functools

import flax.linen as nn
import jax.numpy as jnp

from research.errors import ConfigError
from research.models.conv import Conv
from research.models.layers import check_images
from research.models.norm import BatchNorm
from research.models.residual import materialize, relu


def _norm(train, dtype, name, relu=False):
  return BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                   relu=relu, name=name)


def _conv(features, kernel, strides, dtype, name, dilation=1):
  pad = dilation * (kernel // 2)
  return Conv(features, (kernel, kernel), (strides, strides), padding=((pad, pad),) * 2,
              kernel_dilation=dilation, use_bias=False, dtype=dtype, name=name,
              kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'))


class BasicBlock(nn.Module):
  features: int
  strides: int = 1
  dtype: jnp.dtype = jnp.float32
  dilation: int = 1
  first_dilation: int = 0  # conv1's; 0 = dilation
  expansion = 1

  @nn.compact
  def __call__(self, x, *, train: bool):
    d1, d = self.first_dilation or self.dilation, self.dilation
    conv1 = _conv(self.features, 3, self.strides, self.dtype, 'conv1', d1)
    y = _norm(train, self.dtype, 'bn1', relu=True)(conv1(x))
    y = _norm(train, self.dtype, 'bn2')(_conv(self.features, 3, 1, self.dtype, 'conv2', d)(y))
    return materialize(relu(y + _shortcut(x, self.features, self.strides, train, self.dtype)))


class Bottleneck(nn.Module):
  features: int
  strides: int = 1
  dtype: jnp.dtype = jnp.float32
  dilation: int = 1
  first_dilation: int = 0  # conv2's (the 3x3, strided one); 0 = dilation
  expansion = 4

  @nn.compact
  def __call__(self, x, *, train: bool):
    y = _norm(train, self.dtype, 'bn1', relu=True)(_conv(self.features, 1, 1, self.dtype, 'conv1')(x))
    conv2 = _conv(self.features, 3, self.strides, self.dtype, 'conv2',
                  self.first_dilation or self.dilation)
    y = _norm(train, self.dtype, 'bn2', relu=True)(conv2(y))
    y = _norm(train, self.dtype, 'bn3')(_conv(self.features * 4, 1, 1, self.dtype, 'conv3')(y))
    return materialize(relu(y + _shortcut(x, self.features * 4, self.strides, train, self.dtype)))


def _shortcut(x, features, strides, train, dtype):
  if strides == 1 and x.shape[-1] == features:
    return x
  return _norm(train, dtype, 'downsample_1')(_conv(features, 1, strides, dtype, 'downsample_0')(x))


class ResNet(nn.Module):
  stage_sizes: tuple[int, ...]
  block: type = BasicBlock
  num_classes: int = 1000
  dtype: jnp.dtype = jnp.float32
  output_stride: int = 32  # 16 or 8: the last stages dilated instead of strided
  include_top: bool = True  # False: no pooling and classifier; returns the last feature map

  @nn.compact
  def __call__(self, x, *, train: bool = False, return_features: bool = False):
    check_images(x, f'ResNet-{self._depth()}', min_size=32)
    dilated = {32: 0, 16: 1, 8: 2}.get(self.output_stride)
    if dilated is None:
      raise ConfigError(f'ResNet output_stride must be 32, 16 or 8; got {self.output_stride}')
    features, dilation = {}, 1
    x = x.astype(self.dtype)
    x = _norm(train, self.dtype, 'bn1', relu=True)(_conv(64, 7, 2, self.dtype, 'conv1')(x))
    x = materialize(nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1))))
    features['stem'] = x
    for stage, blocks in enumerate(self.stage_sizes):
      strides, previous = (2 if stage > 0 else 1), dilation
      if stage >= len(self.stage_sizes) - dilated:  # dilate instead of striding
        dilation, strides = dilation * strides, 1
      for i in range(blocks):
        x = self.block(64 * 2 ** stage, strides if i == 0 else 1, self.dtype, dilation,
                       previous if i == 0 else dilation, name=f'layer{stage + 1}_{i}')(x, train=train)
      features[f'stage{stage + 1}'] = x
    if not self.include_top:
      return (x, features) if return_features else x
    x = jnp.mean(x, axis=(1, 2))
    features['pre_logits'] = x
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='fc')(x).astype(jnp.float32)
    return (logits, features) if return_features else logits

  def _depth(self):
    return sum(self.stage_sizes) * (2 if self.block is BasicBlock else 3) + 2


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck)
ResNet101 = functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block=Bottleneck)
ResNet152 = functools.partial(ResNet, stage_sizes=(3, 8, 36, 3), block=Bottleneck)
