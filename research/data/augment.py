"""Preprocessing and augmentation ops that run inside the jitted step, on device.

A config names them as a pipeline string, e.g.

    'random_crop(4)|flip_lr|normalize'               # CIFAR training
    'pad(2)|normalize((0.1307,), (0.3081,))'         # MNIST for LeNet-5 (28 -> 32)

Every pipeline first converts uint8 images to float32 in [0, 1]. Random ops draw one
independent value per example from the key they are given, so a step's augmentation is a
pure function of (images, key). `normalize` without arguments uses the training split's
per-channel mean and std, passed in as `channel_stats`.
"""
import ast
import re

import jax
import jax.numpy as jnp

from research.errors import ConfigError


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
  p = int(padding)
  return jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode=mode)


def resize(images, key, height, width=None):
  del key
  n, _, _, c = images.shape
  return jax.image.resize(images, (n, height, width or height, c), method='bilinear')


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


def rotate(images, key, max_degrees):
  """Rotates each image about its centre by a uniform angle in [-max, max] (bilinear, 0 fill)."""
  n, h, w, c = images.shape
  angles = jnp.deg2rad(jax.random.uniform(key, (n,), minval=-max_degrees, maxval=max_degrees))
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing='ij')
  cy, cx = (h - 1) / 2, (w - 1) / 2

  def one(image, angle):
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    src_y = cos * (yy - cy) - sin * (xx - cx) + cy  # inverse map: output pixel -> source
    src_x = sin * (yy - cy) + cos * (xx - cx) + cx
    sample = lambda channel: jax.scipy.ndimage.map_coordinates(
        channel, [src_y, src_x], order=1, mode='constant', cval=0.0)
    return jax.vmap(sample, in_axes=2, out_axes=2)(image)

  return jax.vmap(one)(images, angles)


def color_jitter(images, key, brightness=0.0, contrast=0.0, saturation=0.0):
  """Random brightness shift, contrast and saturation scaling (torchvision-style ranges)."""
  n = images.shape[0]
  kb, kc, ks = jax.random.split(key, 3)
  factor = lambda k, s: jax.random.uniform(k, (n, 1, 1, 1), minval=1 - s, maxval=1 + s)
  images = images * factor(kb, brightness)
  mean = jnp.mean(images, axis=(1, 2, 3), keepdims=True)
  images = (images - mean) * factor(kc, contrast) + mean
  if images.shape[-1] == 3 and saturation:
    grey = jnp.sum(images * jnp.asarray([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
    images = (images - grey) * factor(ks, saturation) + grey
  return jnp.clip(images, 0.0, 1.0)


OPS = {f.__name__: f for f in (normalize, pad, resize, random_crop, flip_lr, flip_ud, rotate,
                               color_jitter)}
_OP_RE = re.compile(r'^\s*(\w+)\s*(?:\((.*)\))?\s*$')


def parse(spec: str) -> list[tuple[str, tuple]]:
  """'random_crop(4)|flip_lr' -> [('random_crop', (4,)), ('flip_lr', ())]."""
  ops = []
  for part in filter(str.strip, spec.split('|')):
    match = _OP_RE.match(part)
    if not match or match.group(1) not in OPS:
      raise ConfigError(f'unknown preprocessing op {part.strip()!r}; known: {", ".join(OPS)}')
    name, args = match.group(1), match.group(2)
    try:
      values = ast.literal_eval(f'({args},)') if args and args.strip() else ()
    except (ValueError, SyntaxError):
      raise ConfigError(f'cannot read the arguments of preprocessing op {part.strip()!r}') from None
    ops.append((name, values))
  return ops


def make_preprocess(spec: str, channel_stats=None):
  """Returns `preprocess(uint8_images, key) -> float32 images` for a pipeline string."""
  ops = parse(spec)

  def preprocess(images, key):
    images = images.astype(jnp.float32) / 255.0
    for i, (name, args) in enumerate(ops):
      extra = {'channel_stats': channel_stats} if name == 'normalize' else {}
      images = OPS[name](images, jax.random.fold_in(key, i), *args, **extra)
    return images

  return preprocess


def channel_stats(images_uint8, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and std of uint8 images (N, H, W, C), on the [0, 1] scale."""
  import numpy as np
  total = np.zeros(images_uint8.shape[-1])
  squares = np.zeros(images_uint8.shape[-1])
  for start in range(0, len(images_uint8), chunk):
    x = images_uint8[start:start + chunk].astype(np.float64) / 255.0
    total += x.sum(axis=(0, 1, 2))
    squares += (x * x).sum(axis=(0, 1, 2))
  count = images_uint8.size / images_uint8.shape[-1]
  mean = total / count
  std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
  return tuple(float(v) for v in mean), tuple(float(v) for v in std)
