"""Building blocks: conv-norm-activation, depthwise-separable and dilated convolutions, 1x1
convolutions, global pooling, ceil-mode pooling, spatial self-attention, a YOLO-style head."""
import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.errors import ConfigError
from research.models.conv import Conv
from research.models.layers import choose
from research.models.norm import BatchNorm

ACTIVATIONS: dict[str, Callable] = {
    'relu': nn.relu, 'relu6': nn.relu6, 'silu': nn.silu, 'gelu': nn.gelu, 'tanh': jnp.tanh,
    'leaky_relu': functools.partial(nn.leaky_relu, negative_slope=0.1),  # YOLO's slope
    'identity': lambda x: x,
}


def global_avg_pool(x):
  return jnp.mean(x, axis=(1, 2))


def global_max_pool(x):
  return jnp.max(x, axis=(1, 2))


def max_pool_ceil(x, window: int, stride: int, padding: int = 0):
  """Max pooling with torch's ceil_mode=True: a last, partial window is kept when it starts
  inside the (left-padded) input."""
  pads = []
  for size in x.shape[1:3]:
    out = -(-(size + 2 * padding - window) // stride) + 1
    if (out - 1) * stride >= size + padding:
      out -= 1
    extra = max((out - 1) * stride + window - (size + 2 * padding), 0)
    pads.append((padding, padding + extra))
  return nn.max_pool(x, (window, window), (stride, stride), padding=pads)


class ConvBNAct(nn.Module):
  """Conv (optionally dilated or grouped) -> BatchNorm -> activation; names 'conv' and 'bn'."""
  features: int
  kernel_size: int = 3
  strides: int = 1
  dilation: int = 1
  groups: int = 1
  activation: str = 'relu'
  bn_epsilon: float = 1e-5
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    pad = self.dilation * (self.kernel_size - 1) // 2  # 'same' size at stride 1
    x = Conv(self.features, (self.kernel_size,) * 2, (self.strides,) * 2,
             padding=((pad, pad), (pad, pad)), kernel_dilation=self.dilation,
             feature_group_count=self.groups, use_bias=False, dtype=self.dtype, name='conv')(x)
    relu = self.activation == 'relu'  # fused into the BatchNorm
    x = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=self.bn_epsilon,
                  dtype=self.dtype, relu=relu, name='bn')(x)
    return x if relu else choose(ACTIVATIONS, self.activation, 'activation')(x)


class DepthwiseSeparableConv(nn.Module):
  """A k x k depthwise conv (one filter per channel) then a 1x1 pointwise conv, each with BN
  and activation (MobileNet v1): ~k^2 fewer multiply-adds than a full conv for wide layers."""
  features: int
  kernel_size: int = 3
  strides: int = 1
  dilation: int = 1
  activation: str = 'relu'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    x = ConvBNAct(x.shape[-1], self.kernel_size, self.strides, self.dilation, groups=x.shape[-1],
                  activation=self.activation, dtype=self.dtype, name='depthwise')(x, train=train)
    return ConvBNAct(self.features, 1, activation=self.activation, dtype=self.dtype,
                     name='pointwise')(x, train=train)


class SpatialSelfAttention(nn.Module):
  """Self-attention over spatial positions (SAGAN / non-local block): every position attends to
  every other through 1x1-conv queries, keys and values; the result is added to the input,
  scaled by a learned gamma that starts at 0 (so the block starts as the identity)."""
  reduction: int = 8
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    n, h, w, c = x.shape
    inner = max(c // self.reduction, 1)
    conv1x1 = lambda f, name: Conv(f, (1, 1), dtype=self.dtype, name=name)
    q = conv1x1(inner, 'query')(x).reshape(n, h * w, inner)
    k = conv1x1(inner, 'key')(x).reshape(n, h * w, inner)
    v = conv1x1(c, 'value')(x).reshape(n, h * w, c)
    attention = jax.nn.softmax(jnp.einsum('nqd,nkd->nqk', q, k) / jnp.sqrt(inner), axis=-1)
    out = jnp.einsum('nqk,nkc->nqc', attention, v).reshape(n, h, w, c)
    gamma = self.param('gamma', nn.initializers.zeros, ())
    return x + gamma * out


def _objectness_bias(num_anchors: int, num_classes: int, prior: float | None):
  """The predict conv's bias: 0, except logit(prior) on each anchor's objectness channel (a
  detector then starts out predicting `prior` everywhere, as RetinaNet's focal-loss paper
  initialises its classifier, instead of a large background loss at step 0)."""
  def init(key, shape, dtype=jnp.float32):
    del key
    bias = jnp.zeros((num_anchors, 5 + num_classes), dtype)
    if prior is not None:
      bias = bias.at[:, 4].set(jnp.log(prior) - jnp.log1p(-prior))
    return bias.reshape(shape)
  return init


class YOLOHead(nn.Module):
  """YOLO-style detection outputs on a feature map: (N, S, S, anchors, 5 + classes), the 5
  being box x, y, w, h and objectness (raw: decode with sigmoid/exp as the loss expects).
  `objectness_prior` in (0, 1) sets the objectness bias to its logit (None: 0)."""
  num_anchors: int = 3
  num_classes: int = 20
  hidden: int = 256
  objectness_prior: float | None = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, features, *, train: bool = False):
    x = ConvBNAct(self.hidden, 3, activation='leaky_relu', dtype=self.dtype,
                  name='conv')(features, train=train)
    x = Conv(self.num_anchors * (5 + self.num_classes), (1, 1), dtype=self.dtype,
             bias_init=_objectness_bias(self.num_anchors, self.num_classes,
                                        self.objectness_prior), name='predict')(x)
    n, s1, s2, _ = x.shape
    return x.reshape(n, s1, s2, self.num_anchors, 5 + self.num_classes).astype(jnp.float32)


class Detector(nn.Module):
  """Any zoo backbone with a YOLO head on one of its named feature maps (default: the last).

  `merge` names a coarser feature map (half `feature`'s resolution) to bring in as YOLOv3's
  top-down path does (Redmon & Farhadi 2018; the FPN idea, Lin et al. 2017): a 1x1
  conv-BN-leaky ReLU to `feature`'s channels, nearest-neighbour upsampling x2, concatenation
  with `feature`. A head at stride 4 then sees stride-8 context: finer box positions at little
  cost. ConfigError names the maps when a name is unknown or the sizes do not pair up."""
  backbone: nn.Module
  feature: str = ''
  num_anchors: int = 3
  num_classes: int = 20
  hidden: int = 256
  objectness_prior: float | None = None
  merge: str = ''

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    _, features = self.backbone(x, train=train, return_features=True)
    maps = [k for k in features if k not in ('pre_logits', 'logits')]
    name = self.feature or maps[-1]
    for wanted in (name, self.merge or name):
      if wanted not in maps:
        raise ConfigError(f'the backbone has no feature map {wanted!r}; it has {", ".join(maps)}')
    x = features[name]
    if self.merge:
      coarse = features[self.merge]
      if (2 * coarse.shape[1], 2 * coarse.shape[2]) != x.shape[1:3]:
        raise ConfigError(f'detection merge: {self.merge!r} ({coarse.shape[1]}x{coarse.shape[2]}) '
                          f'must be half the size of {name!r} ({x.shape[1]}x{x.shape[2]})')
      coarse = ConvBNAct(x.shape[-1], 1, activation='leaky_relu', name='merge')(coarse,
                                                                               train=train)
      coarse = jnp.repeat(jnp.repeat(coarse, 2, axis=1), 2, axis=2)
      x = jnp.concatenate([x, coarse], axis=-1)
    return YOLOHead(self.num_anchors, self.num_classes, self.hidden, self.objectness_prior,
                    name='head')(x, train=train)
