"""Preprocessing and augmentation ops that run inside the jitted step, on device.

A config names them as a pipeline string, e.g.

    'random_crop(4)|flip_lr|normalize'               # CIFAR training
    'pad(2)|normalize((0.1307,), (0.3081,))'         # MNIST for LeNet-5 (28 -> 32)
    'color_jitter(0.4, 0.4, 0.4, 0.1)|normalize'     # torchvision's ColorJitter

Every pipeline first converts uint8 images (N, H, W, C) to float32 pixels in [0, 1]; every op
but `normalize` works on that scale (fills are pixel values in [0, 1]), so `normalize` comes
last. Random ops draw independent values per example from the key they are given, so a step's
augmentation is a pure function of (images, key). `normalize` without arguments uses the
training split's per-channel mean and std, passed in as `channel_stats`.

Definitions (the usual ones; dm-pix supplies the colour conversions and the rotation):
  pad(n, mode)            n pixels each side; mode 'constant' (0), 'edge', 'reflect', 'symmetric'
  resize(h, w, method)    jax.image.resize, antialiased when shrinking (torchvision v2's default)
  random_crop(n, mode)    pad by n, crop back at a uniform offset (torchvision RandomCrop)
  flip_lr, flip_ud        each with probability 1/2
  rotate(deg, fill)       uniform angle in [-deg, deg] about the centre, bilinear, `fill` outside
  color_jitter(b, c, s, h, random_order=1)   torchvision's ColorJitter: brightness, contrast and
                          saturation factors from U[max(0, 1 - x), 1 + x], hue shift from
                          U[-h, h] (h <= 0.5, fraction of the hue circle); each adjustment is
                          clipped to [0, 1]; in a random order per image unless random_order=0.
                          Brightness multiplies; contrast blends with each channel's mean
                          (tf.image.adjust_contrast); saturation and hue act in HSV (dm-pix,
                          tf.image) and need 3 channels.
"""
import ast
import re

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np

from research.errors import ConfigError

PAD_MODES = ('constant', 'edge', 'reflect', 'symmetric')


def normalize(images, key, mean=None, std=None, *, channel_stats=None):
  del key
  if mean is None:
    if channel_stats is None:
      raise ConfigError('normalize without arguments needs the training split\'s channel '
                        'statistics; give them explicitly: normalize((mean, ...), (std, ...))')
    mean, std = channel_stats
  return (images - jnp.asarray(mean, images.dtype)) / jnp.asarray(std, images.dtype)


def pad(images, key, padding, mode='constant'):
  del key
  if mode not in PAD_MODES:
    raise ConfigError(f'padding mode {mode!r}; known: {", ".join(PAD_MODES)}')
  p = int(padding)
  return jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode=mode)


def resize(images, key, height, width=None, method='bilinear'):
  del key
  n, _, _, c = images.shape
  return jax.image.resize(images, (n, int(height), int(width or height), c), method=method,
                          antialias=True)


def random_crop(images, key, padding, mode='constant'):
  """Pads by `padding` pixels, then crops each image back to its size at a random offset."""
  n, h, w, c = images.shape
  padded = pad(images, None, padding, mode)
  offsets = jax.random.randint(key, (n, 2), 0, 2 * int(padding) + 1)
  crop = lambda image, o: jax.lax.dynamic_slice(image, (o[0], o[1], 0), (h, w, c))
  return jax.vmap(crop)(padded, offsets)


def _flip(images, key, axis):
  flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
  return jnp.where(flip, jnp.flip(images, axis=axis), images)


def flip_lr(images, key):
  return _flip(images, key, axis=2)


def flip_ud(images, key):
  return _flip(images, key, axis=1)


def rotate(images, key, max_degrees, fill=0.0):
  """Rotates each image about its centre by a uniform angle in [-max, max] degrees (bilinear);
  pixels that come from outside the image are `fill`."""
  angles = jnp.deg2rad(jax.random.uniform(key, (images.shape[0],), minval=-max_degrees,
                                          maxval=max_degrees))
  one = lambda image, angle: pix.rotate(image, angle, order=1, mode='constant', cval=fill)
  return jax.vmap(one)(images, angles)


def _factor_range(strength, what):
  if strength < 0:
    raise ConfigError(f'color_jitter {what} must be >= 0, got {strength}')
  return max(0.0, 1.0 - strength), 1.0 + strength


def color_jitter(images, key, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0,
                 random_order=1):
  """torchvision's ColorJitter on pixels in [0, 1] (see the module doc for the definitions)."""
  channels = images.shape[-1]
  if (saturation or hue) and channels != 3:
    raise ConfigError(f'color_jitter saturation and hue need RGB images; these have {channels} '
                      'channel(s): set them to 0')
  if not 0 <= hue <= 0.5:
    raise ConfigError(f'color_jitter hue must be in [0, 0.5], got {hue}')
  n = images.shape[0]
  keys = jax.random.split(key, 5)
  uniform = lambda k, lo_hi: jax.random.uniform(k, (n,), minval=lo_hi[0], maxval=lo_hi[1])
  b = uniform(keys[0], _factor_range(brightness, 'brightness'))
  c = uniform(keys[1], _factor_range(contrast, 'contrast'))
  s = uniform(keys[2], _factor_range(saturation, 'saturation'))
  h = jax.random.uniform(keys[3], (n,), minval=-hue, maxval=hue)
  adjustments = [
      (brightness, lambda x, i: jnp.clip(x * b[i], 0.0, 1.0)),
      (contrast, lambda x, i: jnp.clip(pix.adjust_contrast(x, c[i]), 0.0, 1.0)),
      (saturation, lambda x, i: jnp.clip(pix.adjust_saturation(x, s[i]), 0.0, 1.0)),
      (hue, lambda x, i: jnp.clip(pix.adjust_hue(x, h[i]), 0.0, 1.0)),
  ]
  used = [fn for strength, fn in adjustments if strength]
  if not used:
    return images
  if random_order and len(used) > 1:
    orders = jax.vmap(lambda k: jax.random.permutation(k, len(used)))(jax.random.split(keys[4], n))

    def one(image, i, order):
      for position in range(len(used)):
        image = jax.lax.switch(order[position], [lambda x, f=f: f(x, i) for f in used], image)
      return image

    return jax.vmap(one)(images, jnp.arange(n), orders)

  def in_order(image, i):
    for fn in used:
      image = fn(image, i)
    return image

  return jax.vmap(in_order)(images, jnp.arange(n))


OPS = {f.__name__: f for f in (normalize, pad, resize, random_crop, flip_lr, flip_ud, rotate,
                               color_jitter)}
_OP_RE = re.compile(r'^\s*(\w+)\s*(?:\((.*)\))?\s*$')


def parse(spec: str, ops_table=None, what: str = 'preprocessing op') -> list[tuple[str, tuple]]:
  """'random_crop(4)|flip_lr' -> [('random_crop', (4,)), ('flip_lr', ())]: the names checked
  against `ops_table` (this module's OPS by default), the arguments read as Python literals,
  normalize last. Errors name the op as `what` ('segmentation augmentation op', ...)."""
  ops_table = OPS if ops_table is None else ops_table
  ops = []
  for part in filter(str.strip, spec.split('|')):
    match = _OP_RE.match(part)
    if not match or match.group(1) not in ops_table:
      raise ConfigError(f'unknown {what} {part.strip()!r}; known: {", ".join(ops_table)}')
    name, args = match.group(1), match.group(2)
    try:
      values = ast.literal_eval(f'({args},)') if args and args.strip() else ()
    except (ValueError, SyntaxError):
      raise ConfigError(f'cannot read the arguments of {what} {part.strip()!r}') from None
    ops.append((name, values))
  names = [name for name, _ in ops]
  if 'normalize' in names and names.index('normalize') != len(names) - 1:
    after = names[names.index('normalize') + 1]
    raise ConfigError(f"{what} {after!r} comes after normalize, but ops work on pixels "
                      f"in [0, 1]: put normalize last in {spec!r}")
  return ops


def split_normalize(spec: str) -> tuple[str, str]:
  """('ops before normalize', 'normalize(...)' or ''): the pixel-space part of a pipeline and
  its final normalisation, e.g. for attacks, which perturb pixels in [0, 1]."""
  parts = [p.strip() for p in spec.split('|') if p.strip()]
  if parts and parts[-1].startswith('normalize'):
    return '|'.join(parts[:-1]), parts[-1]
  parse(spec)  # names a misplaced normalize
  return '|'.join(parts), ''


def make_preprocess(spec: str, channel_stats=None, from_uint8: bool = True):
  """Returns `preprocess(images, key) -> float32 images` for a pipeline string: uint8 images
  converted to [0, 1] first, or (`from_uint8=False`) float pixels in [0, 1] as they are."""
  ops = parse(spec)

  def preprocess(images, key):
    images = images.astype(jnp.float32) / 255.0 if from_uint8 else images.astype(jnp.float32)
    for i, (name, args) in enumerate(ops):
      extra = {'channel_stats': channel_stats} if name == 'normalize' else {}
      try:
        images = OPS[name](images, jax.random.fold_in(key, i), *args, **extra)
      except TypeError as e:  # wrong number of arguments
        raise ConfigError(f'preprocessing op {name}{args}: {e}') from None
    return images

  return preprocess


def channel_sums(images_uint8, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray, float]:
  """Per-channel sums of pixels and of squared pixels on the [0, 1] scale, and the pixel count
  per channel, in float64 (sums from several processes add up exactly enough)."""
  total = np.zeros(images_uint8.shape[-1])
  squares = np.zeros(images_uint8.shape[-1])
  for start in range(0, len(images_uint8), chunk):
    x = images_uint8[start:start + chunk].astype(np.float64) / 255.0
    total += x.sum(axis=(0, 1, 2))
    squares += (x * x).sum(axis=(0, 1, 2))
  return total, squares, images_uint8.size / images_uint8.shape[-1]


def stats_from_sums(total, squares, count) -> tuple[tuple[float, ...], tuple[float, ...]]:
  mean = np.asarray(total) / count
  std = np.sqrt(np.maximum(np.asarray(squares) / count - mean * mean, 0.0))
  return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def channel_stats(images_uint8, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and std of uint8 images (N, H, W, C), on the [0, 1] scale."""
  return stats_from_sums(*channel_sums(images_uint8, chunk))
