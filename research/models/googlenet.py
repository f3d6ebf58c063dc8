"""GoogLeNet (Szegedy et al. 2015): a stem, nine Inception modules of four parallel branches
(1x1; 1x1 -> 3x3; 1x1 -> 3x3 in place of the paper's 5x5, as torchvision builds it; 3x3
max-pool -> 1x1) concatenated along channels, global average pooling. No auxiliary heads.
Every conv is conv-BN(eps 1e-3)-ReLU. Layer names follow torchvision's.
"""
import flax.linen as nn
import jax.numpy as jnp

from research.models.blocks import ConvBNAct, max_pool_ceil
from research.models.layers import check_images

# (in is implied) 1x1, 3x3-reduce, 3x3, 5x5-reduce, 5x5 (built as 3x3), pool-proj
INCEPTION = {
    '3a': (64, 96, 128, 16, 32, 32), '3b': (128, 128, 192, 32, 96, 64),
    '4a': (192, 96, 208, 16, 48, 64), '4b': (160, 112, 224, 24, 64, 64),
    '4c': (128, 128, 256, 24, 64, 64), '4d': (112, 144, 288, 32, 64, 64),
    '4e': (256, 160, 320, 32, 128, 128), '5a': (256, 160, 320, 32, 128, 128),
    '5b': (384, 192, 384, 48, 128, 128),
}


class Inception(nn.Module):
  widths: tuple[int, ...]
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    b1, b2_reduce, b2, b3_reduce, b3, b4 = self.widths
    conv = lambda f, k, name: ConvBNAct(f, k, bn_epsilon=1e-3, dtype=self.dtype, name=name)
    branch1 = conv(b1, 1, 'branch1')(x, train=train)
    branch2 = conv(b2, 3, 'branch2_1')(conv(b2_reduce, 1, 'branch2_0')(x, train=train), train=train)
    branch3 = conv(b3, 3, 'branch3_1')(conv(b3_reduce, 1, 'branch3_0')(x, train=train), train=train)
    branch4 = conv(b4, 1, 'branch4_1')(max_pool_ceil(x, 3, 1, 1), train=train)
    return jnp.concatenate([branch1, branch2, branch3, branch4], axis=-1)


class GoogLeNet(nn.Module):
  num_classes: int = 1000
  dropout_rate: float = 0.2
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False, return_features: bool = False):
    check_images(x, 'GoogLeNet', min_size=32)
    conv = lambda f, k, s, name: ConvBNAct(f, k, s, bn_epsilon=1e-3, dtype=self.dtype, name=name)
    features = {}
    x = x.astype(self.dtype)
    x = max_pool_ceil(conv(64, 7, 2, 'conv1')(x, train=train), 3, 2)
    x = conv(192, 3, 1, 'conv3')(conv(64, 1, 1, 'conv2')(x, train=train), train=train)
    x = max_pool_ceil(x, 3, 2)
    features['stem'] = x
    for stage, names in ((3, ('3a', '3b')), (4, ('4a', '4b', '4c', '4d', '4e')), (5, ('5a', '5b'))):
      for name in names:
        x = Inception(INCEPTION[name], self.dtype, name=f'inception{name}')(x, train=train)
      features[f'stage{stage - 2}'] = x
      if stage < 5:
        x = max_pool_ceil(x, 2 if stage == 4 else 3, 2)
    x = jnp.mean(x, axis=(1, 2))
    features['pre_logits'] = x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='fc')(x).astype(jnp.float32)
    return (logits, features) if return_features else logits
