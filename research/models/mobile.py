"""Mobile networks built from inverted residuals (1x1 expand -> depthwise k x k -> 1x1 project,
with a shortcut when shapes allow): MobileNetV2 (Sandler et al. 2018, ReLU6) and
EfficientNet-B0 (Tan & Le 2019, SiLU, squeeze-excitation, stochastic depth).
Layer names follow torchvision's (`features_2_conv_1_0` is `features.2.conv.1.0`).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from research.models.conv import Conv
from research.models.layers import check_images
from research.models.norm import BatchNorm

# MobileNetV2: expansion t, channels c, repeats n, first stride s
MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))
# EfficientNet-B0: expansion, kernel, first stride, channels, repeats
EFFICIENTNET_B0 = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                   (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))


def _conv_bn(x, features, kernel, strides, groups, act, train, dtype, eps, conv_name, bn_name):
  pad = (kernel - 1) // 2
  x = Conv(features, (kernel, kernel), (strides, strides), padding=((pad, pad),) * 2,
           feature_group_count=groups, use_bias=False, dtype=dtype, name=conv_name)(x)
  x = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=eps, dtype=dtype,
                name=bn_name)(x)
  return act(x) if act else x


class InvertedResidual(nn.Module):
  features: int
  strides: int
  expansion: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    hidden, i, y = x.shape[-1] * self.expansion, 0, x
    layer = lambda y, f, k, s, g, act, idx: _conv_bn(
        y, f, k, s, g, act, train, self.dtype, 1e-5,
        *((f'conv_{idx}_0', f'conv_{idx}_1') if act else (f'conv_{idx}', f'conv_{idx + 1}')))
    if self.expansion != 1:
      y, i = layer(y, hidden, 1, 1, 1, nn.relu6, 0), 1
    y = layer(y, hidden, 3, self.strides, hidden, nn.relu6, i)
    y = layer(y, self.features, 1, 1, 1, None, i + 1)
    return x + y if self.strides == 1 and x.shape[-1] == self.features else y


class MobileNetV2(nn.Module):
  num_classes: int = 1000
  dropout_rate: float = 0.2
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False, return_features: bool = False):
    check_images(x, 'MobileNetV2', min_size=32)
    features, index = {}, 1
    x = _conv_bn(x.astype(self.dtype), 32, 3, 2, 1, nn.relu6, train, self.dtype, 1e-5,
                 'features_0_0', 'features_0_1')
    features['stem'] = x
    for stage, (t, c, n, s) in enumerate(MOBILENET_V2):
      for i in range(n):
        x = InvertedResidual(c, s if i == 0 else 1, t, self.dtype,
                             name=f'features_{index}')(x, train=train)
        index += 1
      features[f'stage{stage + 1}'] = x
    x = _conv_bn(x, 1280, 1, 1, 1, nn.relu6, train, self.dtype, 1e-5,
                 f'features_{index}_0', f'features_{index}_1')
    x = jnp.mean(x, axis=(1, 2))
    features['pre_logits'] = x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='classifier_1')(x).astype(jnp.float32)
    return (logits, features) if return_features else logits


class MBConv(nn.Module):
  """EfficientNet's block: inverted residual with squeeze-excitation (squeeze to a quarter of
  the block's input channels) and stochastic depth on the residual branch."""
  features: int
  kernel: int
  strides: int
  expansion: int
  drop_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    hidden, i, y = x.shape[-1] * self.expansion, 0, x
    layer = lambda y, f, k, s, g, act, idx: _conv_bn(
        y, f, k, s, g, act, train, self.dtype, 1e-3, f'block_{idx}_0', f'block_{idx}_1')
    if self.expansion != 1:
      y, i = layer(y, hidden, 1, 1, 1, nn.silu, 0), 1
    y = layer(y, hidden, self.kernel, self.strides, hidden, nn.silu, i)
    squeeze = max(1, x.shape[-1] // 4)
    s = jnp.mean(y, axis=(1, 2), keepdims=True)
    s = nn.silu(Conv(squeeze, (1, 1), dtype=self.dtype, name=f'block_{i + 1}_fc1')(s))
    y = y * nn.sigmoid(Conv(hidden, (1, 1), dtype=self.dtype, name=f'block_{i + 1}_fc2')(s))
    y = layer(y, self.features, 1, 1, 1, None, i + 2)
    if self.strides != 1 or x.shape[-1] != self.features:
      return y
    if train and self.drop_rate > 0:  # stochastic depth: drop the whole branch per example
      keep = jax.random.bernoulli(self.make_rng('dropout'), 1 - self.drop_rate,
                                  (y.shape[0], 1, 1, 1))
      y = jnp.where(keep, y / (1 - self.drop_rate), 0)
    return x + y


class EfficientNetB0(nn.Module):
  num_classes: int = 1000
  dropout_rate: float = 0.2
  stochastic_depth: float = 0.2
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False, return_features: bool = False):
    check_images(x, 'EfficientNet-B0', min_size=32)
    features = {}
    x = _conv_bn(x.astype(self.dtype), 32, 3, 2, 1, nn.silu, train, self.dtype, 1e-3,
                 'features_0_0', 'features_0_1')
    features['stem'] = x
    total, block = sum(r for *_, r in EFFICIENTNET_B0), 0
    for stage, (t, k, s, c, n) in enumerate(EFFICIENTNET_B0):
      for i in range(n):
        x = MBConv(c, k, s if i == 0 else 1, t, self.stochastic_depth * block / total, self.dtype,
                   name=f'features_{stage + 1}_{i}')(x, train=train)
        block += 1
      features[f'stage{stage + 1}'] = x
    x = _conv_bn(x, 1280, 1, 1, 1, nn.silu, train, self.dtype, 1e-3, 'features_8_0', 'features_8_1')
    x = jnp.mean(x, axis=(1, 2))
    features['pre_logits'] = x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='classifier_1')(x).astype(jnp.float32)
    return (logits, features) if return_features else logits
