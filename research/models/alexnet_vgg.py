"""AlexNet (Krizhevsky et al. 2012, torchvision's single-GPU variant) and VGG-11/13/16/19
(Simonyan & Zisserman 2015), with and without BatchNorm.

Layer names follow torchvision's (`features_3` is `features.3`) so that its weights convert
by name. Both pool their last feature map onto a fixed grid (6x6, 7x7) before the
classifier, like torchvision, so any input size from the minimum up works. VGG's
`include_top=False` drops the pooling and classifier: it then returns the last feature map
(pool5), for dense prediction (research/models/fcn.py).
"""
import functools

import flax.linen as nn
import jax.numpy as jnp

from research.errors import ConfigError
from research.models.conv import Conv
from research.models.layers import adaptive_avg_pool, check_images, max_pool
from research.models.norm import BatchNorm

VGG_LAYERS = {
    11: (64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'),
    13: (64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'),
    16: (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'),
    19: (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M',
         512, 512, 512, 512, 'M'),
}


def _classifier(x, dims, names, num_classes, dropout_rate, train, dtype, features, dropout_first):
  """Two hidden Dense-ReLU layers with dropout, then the logits; records 'pre_logits'."""
  for dim, name in zip(dims, names[:-1]):
    if dropout_first:
      x = nn.Dropout(dropout_rate, deterministic=not train)(x)
    x = nn.relu(nn.Dense(dim, dtype=dtype, name=name)(x))
    if not dropout_first:
      x = nn.Dropout(dropout_rate, deterministic=not train)(x)
  features['pre_logits'] = x
  return nn.Dense(num_classes, dtype=dtype, name=names[-1])(x).astype(jnp.float32)


class AlexNet(nn.Module):
  num_classes: int = 1000
  dropout_rate: float = 0.5
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False, return_features: bool = False):
    check_images(x, 'AlexNet', min_size=63)
    conv = functools.partial(Conv, dtype=self.dtype)
    pool = lambda y: nn.max_pool(y, (3, 3), (2, 2))
    features = {}
    x = x.astype(self.dtype)
    x = pool(nn.relu(conv(64, (11, 11), (4, 4), padding=((2, 2),) * 2, name='features_0')(x)))
    features['stem'] = x
    x = pool(nn.relu(conv(192, (5, 5), padding=((2, 2),) * 2, name='features_3')(x)))
    features['stage1'] = x
    for index, width in ((6, 384), (8, 256), (10, 256)):
      x = nn.relu(conv(width, (3, 3), padding=((1, 1),) * 2, name=f'features_{index}')(x))
    x = pool(x)
    features['stage2'] = x
    x = adaptive_avg_pool(x, (6, 6)).reshape((x.shape[0], -1))
    logits = _classifier(x, (4096, 4096), ('classifier_1', 'classifier_4', 'classifier_6'),
                         self.num_classes, self.dropout_rate, train, self.dtype, features,
                         dropout_first=True)
    return (logits, features) if return_features else logits


class VGG(nn.Module):
  depth: int = 16
  batch_norm: bool = False
  num_classes: int = 1000
  dropout_rate: float = 0.5
  dtype: jnp.dtype = jnp.float32
  include_top: bool = True  # False: no pooling and classifier; returns the last feature map

  @nn.compact
  def __call__(self, x, *, train: bool = False, return_features: bool = False):
    if self.depth not in VGG_LAYERS:
      raise ConfigError(f'VGG depth must be one of {sorted(VGG_LAYERS)}; got {self.depth}')
    check_images(x, f'VGG-{self.depth}', min_size=32)
    features, index, stage = {}, 0, 0  # index: the layer's position in torchvision's `features`
    x = x.astype(self.dtype)
    for layer in VGG_LAYERS[self.depth]:
      if layer == 'M':
        x = max_pool(x, (2, 2))
        features[f'stage{stage}' if stage else 'stem'] = x  # block 1 is the stem, 2-5 stages 1-4
        index, stage = index + 1, stage + 1
        continue
      x = Conv(layer, (3, 3), padding=((1, 1),) * 2, dtype=self.dtype, name=f'features_{index}')(x)
      if self.batch_norm:
        x = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      dtype=self.dtype, relu=True, name=f'features_{index + 1}')(x)
      else:
        x = nn.relu(x)
      index += 3 if self.batch_norm else 2
    if not self.include_top:
      return (x, features) if return_features else x
    x = adaptive_avg_pool(x, (7, 7)).reshape((x.shape[0], -1))
    logits = _classifier(x, (4096, 4096), ('classifier_0', 'classifier_3', 'classifier_6'),
                         self.num_classes, self.dropout_rate, train, self.dtype, features,
                         dropout_first=False)
    return (logits, features) if return_features else logits


VGG11 = functools.partial(VGG, depth=11)
VGG13 = functools.partial(VGG, depth=13)
VGG16 = functools.partial(VGG, depth=16)
VGG19 = functools.partial(VGG, depth=19)
VGG11BN = functools.partial(VGG, depth=11, batch_norm=True)
VGG13BN = functools.partial(VGG, depth=13, batch_norm=True)
VGG16BN = functools.partial(VGG, depth=16, batch_norm=True)
VGG19BN = functools.partial(VGG, depth=19, batch_norm=True)
