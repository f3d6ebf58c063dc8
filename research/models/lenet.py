"""LeNet-5 (LeCun et al. 1998): two 5x5 convolutions with subsampling, then three dense layers.

On 32x32 inputs with 10 classes it has 61,706 parameters. The 16 feature maps before the
dense layers are average-pooled onto a fixed 5x5 grid, which leaves 32x32 inputs unchanged
and lets other sizes (>= 16 px, e.g. unpadded 28x28 MNIST) through with the same weights.
"""
import flax.linen as nn
import jax.numpy as jnp

from research.models.conv import Conv
from research.models.layers import adaptive_avg_pool, check_images, choose, max_pool

_ACTIVATIONS = {'tanh': jnp.tanh, 'relu': nn.relu}


class LeNet5(nn.Module):
  num_classes: int = 10
  activation: str = 'tanh'  # the 1998 paper's squashing; 'relu' trains faster
  pooling: str = 'avg'      # 'avg' (the paper's subsampling) or 'max'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False, return_features: bool = False):
    check_images(x, 'LeNet5', min_size=16)
    act = choose(_ACTIVATIONS, self.activation, 'LeNet5 activation')
    pool = choose({'avg': nn.avg_pool, 'max': max_pool}, self.pooling, 'LeNet5 pooling')
    x = x.astype(self.dtype)
    features = {}
    x = pool(act(Conv(6, (5, 5), padding='VALID', dtype=self.dtype, name='conv1')(x)), (2, 2), (2, 2))
    features['stage1'] = x
    x = pool(act(Conv(16, (5, 5), padding='VALID', dtype=self.dtype, name='conv2')(x)), (2, 2), (2, 2))
    features['stage2'] = x
    x = adaptive_avg_pool(x, (5, 5)).reshape((x.shape[0], -1))
    x = act(nn.Dense(120, dtype=self.dtype, name='fc1')(x))
    x = act(nn.Dense(84, dtype=self.dtype, name='fc2')(x))
    features['pre_logits'] = x
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='logits')(x).astype(jnp.float32)
    return (logits, features) if return_features else logits
