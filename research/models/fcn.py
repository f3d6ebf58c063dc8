"""Fully convolutional networks, FCN-32s/16s/8s (Long, Shelhamer & Darrell 2015, "Fully
Convolutional Networks for Semantic Segmentation"), on a zoo backbone.

The backbone is a zoo model without its classifier (`include_top=False`), read through its
named features (`return_features=True`): for VGG and ResNet alike, `stage2` is at stride 8
(VGG's pool3), `stage3` at stride 16 (pool4) and `stage4` at stride 32 (pool5), or at 16 / 8
for a dilated ResNet (`output_stride`, atrous convolution).

Head on `stage4`: for VGG, the paper's convolutionalised classifier, fc6 (7x7, `head_width`
= 4096 channels) and fc7 (1x1), each with ReLU and dropout; for ResNet, torchvision's FCNHead
(3x3 conv of in/4 channels, BatchNorm, ReLU, dropout). `head_width=-1` picks those widths,
0 drops the hidden layers. Then a 1x1 convolution scores each class (`score_fr`).

- `32s`: the stride-32 scores are upsampled to the input's size.
- `16s`: the scores are upsampled 2x by a learned transposed convolution (4x4, stride 2,
  initialised to bilinear interpolation, no bias: `upscore2`) and added to a 1x1 scoring
  of `stage3` (`score_pool4`, initialised to zero, so training starts from FCN-32s).
- `8s`: likewise once more with `stage2` (`upscore_pool4`, `score_pool3`).
Where a dilated ResNet's coarser map already has the skip's size, the two are added without
upsampling (and that upsampler has no parameters). The last upsampling to the input's size is
fixed bilinear interpolation, as in the paper (jax.image.resize, half-pixel centres).

Changes from the paper: fc6 pads its input ('SAME') instead of the paper's 100-pixel padding of
the image and the crops that undo it; a 2x upsampled map one pixel smaller than its skip (odd
sizes) is padded by repeating its last row/column. Any input size the backbone takes works
(at least 32x32), odd sizes included; output float32 logits (N, H, W, num_classes).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research.errors import ConfigError
from research.models import alexnet_vgg, resnet
from research.models.conv import Conv
from research.models.norm import BatchNorm

VARIANTS = ('32s', '16s', '8s')
BACKBONES = {
    'vgg11': alexnet_vgg.VGG11, 'vgg13': alexnet_vgg.VGG13, 'vgg16': alexnet_vgg.VGG16,
    'vgg19': alexnet_vgg.VGG19, 'vgg11_bn': alexnet_vgg.VGG11BN, 'vgg13_bn': alexnet_vgg.VGG13BN,
    'vgg16_bn': alexnet_vgg.VGG16BN, 'vgg19_bn': alexnet_vgg.VGG19BN,
    'resnet18': resnet.ResNet18, 'resnet34': resnet.ResNet34, 'resnet50': resnet.ResNet50,
    'resnet101': resnet.ResNet101, 'resnet152': resnet.ResNet152,
}


def bilinear_kernel(size: int, channels: int) -> np.ndarray:
  """(size, size, channels, channels) float32: the bilinear interpolation filter on the
  diagonal (class c to class c), zero elsewhere; for size 4 and stride 2 its 1-D taps are
  (0.25, 0.75, 0.75, 0.25)."""
  factor = (size + 1) // 2
  centre = factor - 1 if size % 2 == 1 else factor - 0.5
  taps = 1 - np.abs(np.arange(size) - centre) / factor
  kernel = np.zeros((size, size, channels, channels), np.float32)
  kernel[:, :, np.arange(channels), np.arange(channels)] = np.outer(taps, taps)[..., None]
  return kernel


class Upsample2x(nn.Module):
  """Learned 2x upsampling (transposed 4x4 convolution, stride 2, no bias) initialised to
  bilinear interpolation: away from the border it equals jax.image.resize's bilinear 2x."""
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    init = lambda key, shape, dtype=jnp.float32: jnp.asarray(bilinear_kernel(4, shape[-1]), dtype)
    return nn.ConvTranspose(self.features, (4, 4), (2, 2), padding=((2, 2), (2, 2)),
                            use_bias=False, kernel_init=init, dtype=self.dtype, name='deconv')(x)


def _fit(x, shape):
  """Crops x's height and width to `shape`'s, or pads them by repeating the last row/column."""
  x = x[:, :shape[1], :shape[2]]
  pads = ((0, 0), (0, shape[1] - x.shape[1]), (0, shape[2] - x.shape[2]), (0, 0))
  return jnp.pad(x, pads, mode='edge') if any(p[1] for p in pads) else x


class FCN(nn.Module):
  num_classes: int = 21
  backbone: str = 'vgg16'
  variant: str = '8s'
  output_stride: int = 32
  head_width: int = -1
  dropout_rate: float = 0.5
  dtype: jnp.dtype = jnp.float32

  @property
  def size_multiple(self) -> int:
    """Any input size works (the last upsampling resizes to it)."""
    return 1

  @nn.compact
  def __call__(self, x, *, train: bool = False, return_features: bool = False):
    if self.backbone not in BACKBONES:
      raise ConfigError(f'FCN backbone {self.backbone!r}; known: {", ".join(BACKBONES)}')
    if self.variant not in VARIANTS:
      raise ConfigError(f'FCN variant {self.variant!r}; known: {", ".join(VARIANTS)}')
    is_vgg = self.backbone.startswith('vgg')
    kwargs = {} if is_vgg else {'output_stride': self.output_stride}
    if is_vgg and self.output_stride != 32:
      raise ConfigError(f'FCN output_stride={self.output_stride} needs a ResNet backbone (VGG has '
                        'no dilated variant here); use output_stride=32 with VGG')
    body = BACKBONES[self.backbone](num_classes=1, include_top=False, dtype=self.dtype,
                                    name='backbone', **kwargs)
    top, features = body(x, train=train, return_features=True)

    width = self.head_width if self.head_width >= 0 else (4096 if is_vgg else top.shape[-1] // 4)
    y = top
    if width and is_vgg:  # fc6 and fc7 as convolutions
      for name, size in (('fc6', 7), ('fc7', 1)):
        y = nn.relu(Conv(width, (size, size), padding='SAME', dtype=self.dtype, name=name)(y))
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    elif width:  # torchvision's FCNHead
      y = Conv(width, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, dtype=self.dtype,
               name='head_conv')(y)
      y = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                    relu=True, name='head_bn')(y)
      y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    score = Conv(self.num_classes, (1, 1), dtype=self.dtype, name='score_fr')(y)

    skips = {'32s': (), '16s': (('stage3', 'pool4', 'upscore2'),),
             '8s': (('stage3', 'pool4', 'upscore2'), ('stage2', 'pool3', 'upscore_pool4'))}
    for feature, pool, upsampler in skips[self.variant]:
      skip = features[feature]
      if score.shape[1:3] != skip.shape[1:3]:
        score = _fit(Upsample2x(self.num_classes, self.dtype, name=upsampler)(score), skip.shape)
      score = score + Conv(self.num_classes, (1, 1), kernel_init=nn.initializers.zeros,
                           dtype=self.dtype, name=f'score_{pool}')(skip)
    n, h, w = x.shape[:3]
    logits = jax.image.resize(score.astype(jnp.float32), (n, h, w, self.num_classes), 'bilinear')
    if return_features:
      return logits, {**features, 'score': score}
    return logits
