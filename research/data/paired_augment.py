"""Paired augmentation for segmentation, on device: every geometric op moves an image, its mask
and (optionally) a per-pixel weight map by the same transform; photometric ops change the
image only. Jittable; each example draws from its own key (`fold_in(key, example index)`), so
an example's augmentation does not depend on the rest of its batch.

A config names ops as a pipeline string, like research/data/augment.py:

    'random_crop(256)|flip_lr|flip_ud|rot90|rotate(10)|elastic(3, 10)|brightness(0.1)|normalize'

`make_paired_augment(spec, channel_stats, ignore_label)(images, masks, key, weights=None)`
takes uint8 images (N, H, W, C), integer masks (N, H, W) or (N, H, W, 1) and float weights
(N, H, W) or None; it returns float32 images (pixels in [0, 1], or normalised if the pipeline
ends with `normalize`), int32 masks (N, h, w) and float32 weights (N, h, w) (None when none
were given). Interpolation: order 1 (bilinear) for the image and the weights, order 0 (nearest
neighbour) for the mask, so that masks keep their class values; `image_order=0` makes the
image nearest-neighbour too (for checks). Pixels a warp takes from outside the image follow
`mode`: 'mirror' (default; jax.scipy.ndimage's name for scipy's 'mirror': reflection about the
edge pixel), 'reflect', 'nearest', 'wrap', or 'constant' (image 0, mask `ignore_label`, so
the loss ignores them, weight 0).

Ops (random values drawn per example):
  random_crop(h, w=h)     a uniform h x w window (h, w <= the image's size, else ConfigError)
  pad(m, mode)            m more pixels on every side: the image extended by `mode` (default
                          'mirror'), the mask with the ignore label, the weights with 0
  ignore_border(m)        the ignore label (weight 0) within m pixels of the crop's border: the
                          loss is taken only where a prediction saw m pixels of real context;
                          'pad(m)|random_crop(c + 2m)|...|ignore_border(m)' trains on c x c
                          windows that cover the whole image (the U-Net paper's overlap-tile
                          strategy; evaluate with data.eval_ops 'pad(m)|normalize' to match)
  flip_lr, flip_ud        each with probability 1/2
  rot90                   k * 90 degrees, k uniform in {0, 1, 2, 3} (square images only)
  rotate(deg, mode)       uniform angle in [-deg, deg] about the centre (dm-pix's rotate)
  elastic(grid, sigma, mode)  the U-Net paper's deformation: displacement vectors on a coarse
                          grid x grid lattice spread over the image, each component drawn from
                          N(0, sigma^2) pixels, interpolated to every pixel with bicubic
                          interpolation (jax.image.resize 'cubic'); the image is resampled at
                          (row + dy, col + dx) (Ronneberger et al. 2015: 3 x 3 grid, sigma 10)
  elastic_simard(alpha, sigma)  Simard et al. 2003 as dm-pix implements it (uniform per-pixel
                          noise smoothed by a Gaussian of `sigma`, times `alpha`; mode
                          'nearest'); the same key gives the image and the mask one field
  brightness(d)           adds U(-d, d), then clips to [0, 1]                    (image only)
  contrast(s)             blends with the image's mean by a factor U(1 - s, 1 + s), clips
  gamma(s)                x ** g with g ~ U(1 - s, 1 + s) (s < 1), clips
  normalize               (x - mean) / std: the training split's channel statistics, or
                          normalize((mean,), (std,)); must come last
"""

import dm_pix as pix
import jax
import jax.numpy as jnp
from jax.scipy import ndimage

from research.data import augment
from research.errors import ConfigError

MODES = ('mirror', 'reflect', 'nearest', 'wrap', 'constant')


class _Context:
  """What every op may need besides its arguments."""

  def __init__(self, ignore_label: int, image_order: int, channel_stats):
    self.ignore_label, self.image_order, self.channel_stats = ignore_label, image_order, channel_stats


def _maybe(fn, weight):
  """fn(weight), or None when there are no weights."""
  return None if weight is None else fn(weight)


def _check_mode(mode):
  if mode not in MODES:
    raise ConfigError(f'interpolation mode {mode!r}; known: {", ".join(MODES)}')


def _resample(image, mask, weight, coordinates, mode, ctx):
  """Samples every field at `coordinates` (2, H, W) (row, col): order 1 / order 0 / order 1."""
  _check_mode(mode)
  sample = lambda plane, order, cval: ndimage.map_coordinates(plane, list(coordinates), order,
                                                              mode=mode, cval=cval)
  image = jnp.stack([sample(image[..., c], ctx.image_order, 0.0)
                     for c in range(image.shape[-1])], axis=-1)
  mask = sample(mask.astype(jnp.float32), 0, float(ctx.ignore_label))
  return image, jnp.round(mask).astype(jnp.int32), _maybe(lambda w: sample(w, 1, 0.0), weight)


def random_crop(image, mask, weight, key, height, width=None, *, ctx):
  del ctx
  h, w = int(height), int(width or height)
  if h > image.shape[0] or w > image.shape[1]:
    raise ConfigError(f'random_crop({h}, {w}) is larger than the {image.shape[0]}x'
                      f'{image.shape[1]} images; crop at most {image.shape[0]}x{image.shape[1]}')
  top = jax.random.randint(key, (), 0, image.shape[0] - h + 1)
  left = jax.random.randint(jax.random.fold_in(key, 1), (), 0, image.shape[1] - w + 1)
  crop = lambda x: jax.lax.dynamic_slice(x, (top, left, *([0] * (x.ndim - 2))),
                                         (h, w, *x.shape[2:]))
  return crop(image), crop(mask), _maybe(crop, weight)


_NUMPY_PAD_MODES = {'mirror': 'reflect', 'reflect': 'symmetric', 'nearest': 'edge', 'wrap': 'wrap',
                    'constant': 'constant'}


def pad(image, mask, weight, key, size, mode='mirror', *, ctx):
  """`size` more pixels on every side: the image extended by `mode`, the mask with the ignore
  label and the weights with 0, so that no loss is taken on invented pixels."""
  del key
  _check_mode(mode)
  m = int(size)
  if m < 0 or (mode in ('mirror', 'reflect') and m > min(image.shape[:2]) - 1):
    raise ConfigError(f'pad({size}): the padding must be in [0, {min(image.shape[:2]) - 1}] '
                      f'pixels for {image.shape[0]}x{image.shape[1]} images')
  image = jnp.pad(image, ((m, m), (m, m), (0, 0)), mode=_NUMPY_PAD_MODES[mode])
  mask = jnp.pad(mask, m, constant_values=ctx.ignore_label)
  return image, mask, _maybe(lambda w: jnp.pad(w, m), weight)


def ignore_border(image, mask, weight, key, size, *, ctx):
  """Sets the mask to the ignore label (weights to 0) within `size` pixels of the crop's border:
  those pixels' predictions see zero padding where the full image has content, so the loss is
  taken on pixels with `size` pixels of real context on every side (the U-Net paper's
  overlap-tile idea, with padded convolutions)."""
  del key
  m = int(size)
  if not 0 <= 2 * m < min(mask.shape[:2]):
    raise ConfigError(f'ignore_border({size}) leaves no pixel of a {mask.shape[0]}x'
                      f'{mask.shape[1]} crop; use less than {(min(mask.shape[:2]) + 1) // 2}')
  rows, cols = jnp.arange(mask.shape[0])[:, None], jnp.arange(mask.shape[1])[None, :]
  inside = ((rows >= m) & (rows < mask.shape[0] - m) & (cols >= m) & (cols < mask.shape[1] - m))
  return (image, jnp.where(inside, mask, ctx.ignore_label),
          _maybe(lambda w: jnp.where(inside, w, 0.0), weight))


def _flip(image, mask, weight, key, axis):
  flip = jax.random.bernoulli(key)
  flipped = lambda x: jnp.where(flip, jnp.flip(x, axis), x)
  return flipped(image), flipped(mask), _maybe(flipped, weight)


def flip_lr(image, mask, weight, key, *, ctx):
  del ctx
  return _flip(image, mask, weight, key, 1)


def flip_ud(image, mask, weight, key, *, ctx):
  del ctx
  return _flip(image, mask, weight, key, 0)


def rot90(image, mask, weight, key, *, ctx):
  del ctx
  if image.shape[0] != image.shape[1]:
    raise ConfigError(f'rot90 needs square images; these are {image.shape[0]}x{image.shape[1]}: '
                      'put a square random_crop before it')
  k = jax.random.randint(key, (), 0, 4)
  turn = lambda x: jax.lax.switch(k, [lambda y, i=i: jnp.rot90(y, i, axes=(0, 1)) for i in range(4)], x)
  return turn(image), turn(mask), _maybe(turn, weight)


def rotate(image, mask, weight, key, max_degrees, mode='mirror', *, ctx):
  """Counter-clockwise by a uniform angle in [-max, max] degrees about the centre (dm-pix)."""
  _check_mode(mode)
  angle = jnp.deg2rad(jax.random.uniform(key, (), minval=-max_degrees, maxval=max_degrees))
  turn = lambda x, order, cval: pix.rotate(x, angle, order=order, mode=mode, cval=cval)
  image = turn(image, ctx.image_order, 0.0)
  mask = turn(mask[..., None].astype(jnp.float32), 0, float(ctx.ignore_label))[..., 0]
  return (image, jnp.round(mask).astype(jnp.int32),
          _maybe(lambda w: turn(w[..., None], 1, 0.0)[..., 0], weight))


def elastic_displacements(key, shape, grid: int, sigma: float):
  """(2, H, W) float32 displacements (rows, cols) in pixels: N(0, sigma^2) on a grid x grid
  lattice, bicubic-interpolated to every pixel (the U-Net paper's elastic deformation)."""
  if grid < 2:
    raise ConfigError(f'elastic grid must be at least 2 (points per side), got {grid}')
  coarse = sigma * jax.random.normal(key, (2, int(grid), int(grid)))
  return jax.image.resize(coarse, (2, *shape), 'cubic')


def elastic(image, mask, weight, key, grid=3, sigma=10.0, mode='mirror', *, ctx):
  displacement = elastic_displacements(key, image.shape[:2], grid, sigma)
  rows, cols = jnp.meshgrid(jnp.arange(image.shape[0]), jnp.arange(image.shape[1]), indexing='ij')
  coordinates = jnp.stack([rows, cols]).astype(jnp.float32) + displacement
  return _resample(image, mask, weight, coordinates, mode, ctx)


def elastic_simard(image, mask, weight, key, alpha=34.0, sigma=4.0, *, ctx):
  warp = lambda x, order: pix.elastic_deformation(key, x, alpha, sigma, order=order, mode='nearest')
  image = warp(image, ctx.image_order)
  mask = warp(mask[..., None].astype(jnp.float32), 0)[..., 0]
  return (image, jnp.round(mask).astype(jnp.int32),
          _maybe(lambda w: warp(w[..., None], 1)[..., 0], weight))


def brightness(image, mask, weight, key, delta, *, ctx):
  del ctx
  shift = jax.random.uniform(key, (), minval=-delta, maxval=delta)
  return jnp.clip(image + shift, 0.0, 1.0), mask, weight


def contrast(image, mask, weight, key, strength, *, ctx):
  del ctx
  factor = jax.random.uniform(key, (), minval=max(0.0, 1 - strength), maxval=1 + strength)
  return jnp.clip(pix.adjust_contrast(image, factor), 0.0, 1.0), mask, weight


def gamma(image, mask, weight, key, strength, *, ctx):
  del ctx
  if not 0 <= strength < 1:
    raise ConfigError(f'gamma strength must be in [0, 1), got {strength}')
  g = jax.random.uniform(key, (), minval=1 - strength, maxval=1 + strength)
  return jnp.clip(pix.adjust_gamma(image, g), 0.0, 1.0), mask, weight


def normalize(image, mask, weight, key, mean=None, std=None, *, ctx):
  out = augment.normalize(image[None], key, mean, std, channel_stats=ctx.channel_stats)[0]
  return out, mask, weight


OPS = {f.__name__: f for f in (random_crop, pad, ignore_border, flip_lr, flip_ud, rot90, rotate,
                               elastic, elastic_simard, brightness, contrast, gamma, normalize)}


def parse(spec: str) -> list[tuple[str, tuple]]:
  """'random_crop(256)|flip_lr' -> [('random_crop', (256,)), ('flip_lr', ())]."""
  return augment.parse(spec, OPS, 'segmentation augmentation op')


def make_paired_augment(spec: str, channel_stats=None, ignore_label: int = 255,
                        image_order: int = 1):
  """Returns `augment(images, masks, key, weights=None) -> (images, masks, weights)` (see the
  module doc for shapes and dtypes)."""
  ops = parse(spec)
  ctx = _Context(ignore_label, image_order, channel_stats)

  def one(image, mask, weight, key):
    for i, (name, args) in enumerate(ops):
      try:
        image, mask, weight = OPS[name](image, mask, weight, jax.random.fold_in(key, i), *args,
                                        ctx=ctx)
      except TypeError as e:  # wrong number of arguments
        raise ConfigError(f'augmentation op {name}{args}: {e}') from None
    return image, mask, weight

  def paired_augment(images, masks, key, weights=None):
    images = jnp.asarray(images)
    masks = jnp.asarray(masks)
    masks = masks[..., 0] if masks.ndim == 4 else masks
    if images.shape[:3] != masks.shape:
      raise ConfigError(f'masks {tuple(masks.shape[1:])} do not have the images\' size '
                        f'{tuple(images.shape[1:3])}; give one mask per image, of its height and width')
    weights = None if weights is None else jnp.asarray(weights, jnp.float32)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(images.shape[0]))
    return jax.vmap(one)(images.astype(jnp.float32) / 255.0, masks.astype(jnp.int32), weights, keys)

  return paired_augment


def make_image_preprocess(spec: str, channel_stats=None, ignore_label: int = 255):
  """Returns `preprocess(uint8 images (N, H, W, C)) -> float32 images`: the pipeline `spec` on
  images alone (an evaluation pipeline, e.g. 'normalize'; masks are zeros, the key fixed)."""
  paired_augment = make_paired_augment(spec, channel_stats, ignore_label)
  return lambda images: paired_augment(images, jnp.zeros(images.shape[:3], jnp.uint8),
                                       jax.random.PRNGKey(0))[0]
