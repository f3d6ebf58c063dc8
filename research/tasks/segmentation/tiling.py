"""Sliding-window (tiled) inference for images larger than a model's training crop, with
optional test-time augmentation over flips and 90-degree rotations (the U-Net paper's
overlap-tile strategy, with padded convolutions).

Tiles of `tile` = (h, w) pixels start every (h - overlap, w - overlap) pixels, the last one
flush with the far edge, so every pixel is covered; an image smaller than a tile is padded by
reflection up to the tile and cropped back. Each pixel's logits are the weighted mean of the
logits of the tiles that cover it, with per-tile weights:
  'uniform'   1 everywhere (a plain average)
  'gaussian'  exp(-d^2 / (2 (s/8)^2)) per axis, d the distance from the tile's centre and s
              the tile size (nnU-Net's choice): tile centres, which saw the most context, count
              more than tile borders
and `margin` > 0 sets the weight to 0 within `margin` pixels of a tile border that lies
inside the image (the border's predictions saw padding, not the image), which needs
overlap >= 2 margin. With margin >= the model's receptive-field radius, tiled logits equal
whole-image logits up to float rounding (tested).

`tta` averages the logits over a set of views, each undone on the logits before averaging:
  ''          none
  'flip_lr'   the image and its left-right mirror (2 views): keeps up/down, so a model
              that learnt an annotation offset along the height axis keeps it
  'dihedral'  the 8 symmetries of the square (4 rotations x optional flip; square tiles only),
              as the U-Net paper did
`predict(images (n, h, w, C)) -> logits (n, h, w, K)` is the model in eval mode (jit it).
"""
import numpy as np

from research.errors import ConfigError

WEIGHTINGS = ('gaussian', 'uniform')
TTA_VIEWS = ('', 'flip_lr', 'dihedral')


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
  """Starts of the tiles along an axis: every tile - overlap pixels, the last at size - tile."""
  if size <= tile:
    return [0]
  step = tile - overlap
  starts = list(range(0, size - tile, step))
  return starts + [size - tile]


def tile_weights(tile: tuple[int, int], weighting: str) -> np.ndarray:
  if weighting not in WEIGHTINGS:
    raise ConfigError(f'tile weighting {weighting!r}; known: {", ".join(WEIGHTINGS)}')
  if weighting == 'uniform':
    return np.ones(tile, np.float64)
  axes = [np.exp(-np.square(np.arange(s) - (s - 1) / 2) / (2 * (s / 8) ** 2)) for s in tile]
  return np.outer(*axes)


def check_tiling(tile: tuple[int, int], overlap: int, margin: int, size_multiple: int) -> None:
  h, w = tile
  for s in tile:
    if s < 1 or s % size_multiple:
      lower = max(s // size_multiple, 1) * size_multiple
      near = f'{lower} or {(s // size_multiple + 1) * size_multiple}'
      raise ConfigError(f'tile size {h}x{w}: {s} is not a multiple of {size_multiple}, which the '
                        f'model needs (U-Net: 2^depth); use {near}')
  if not 0 <= overlap < min(tile):
    raise ConfigError(f'tile overlap {overlap} must be in [0, {min(tile)}) for {h}x{w} tiles')
  if margin < 0 or 2 * margin > overlap:
    raise ConfigError(f'tile margin {margin} needs 0 <= 2 margin <= overlap ({overlap}); raise '
                      'the overlap or lower the margin')


def _tiled(predict, image, tile, overlap, weighting, margin, batch_size):
  """Logits (H, W, K) of one (H, W, C) image, float32."""
  height, width = image.shape[:2]
  pad = ((0, max(tile[0] - height, 0)), (0, max(tile[1] - width, 0)), (0, 0))
  padded = np.pad(image, pad, mode='reflect') if any(p[1] for p in pad) else image
  ph, pw = padded.shape[:2]
  base = tile_weights(tile, weighting)
  boxes = [(top, left) for top in tile_starts(ph, tile[0], overlap)
           for left in tile_starts(pw, tile[1], overlap)]
  total = weight_sum = None
  for first in range(0, len(boxes), batch_size):
    chunk = boxes[first:first + batch_size]
    tiles = np.stack([padded[t:t + tile[0], l:l + tile[1]] for t, l in chunk])
    logits = np.asarray(predict(tiles), np.float64)
    if total is None:
      total = np.zeros((ph, pw, logits.shape[-1]))
      weight_sum = np.zeros((ph, pw, 1))
    for (top, left), out in zip(chunk, logits):
      w = base.copy()
      if margin:  # drop the tile's borders that lie inside the image
        if top > 0:
          w[:margin] = 0
        if top + tile[0] < ph:
          w[-margin:] = 0
        if left > 0:
          w[:, :margin] = 0
        if left + tile[1] < pw:
          w[:, -margin:] = 0
      total[top:top + tile[0], left:left + tile[1]] += out * w[..., None]
      weight_sum[top:top + tile[0], left:left + tile[1]] += w[..., None]
  return (total / weight_sum)[:height, :width].astype(np.float32)


def check_tta(tta: str) -> None:
  if tta not in TTA_VIEWS:
    raise ConfigError(f"test-time augmentation {tta!r}; known: '' (none), "
                      f"{', '.join(v for v in TTA_VIEWS if v)}")


def views(tta: str):
  """(transform, inverse) pairs on (H, W, ...) arrays for the `tta` name (module doc)."""
  check_tta(tta)
  if tta == 'flip_lr':
    mirror = lambda x: x[:, ::-1]
    return [(lambda x: x, lambda y: y), (mirror, mirror)]
  pairs = []
  for k in range(4 if tta == 'dihedral' else 1):
    for flip in ((False, True) if tta == 'dihedral' else (False,)):
      forward = lambda x, k=k, f=flip: np.rot90(x[:, ::-1] if f else x, k)
      inverse = lambda y, k=k, f=flip: (lambda z: z[:, ::-1] if f else z)(np.rot90(y, -k))
      pairs.append((forward, inverse))
  return pairs


def tiled_predict(predict, images, tile, overlap: int = 0, *, weighting: str = 'gaussian',
                  margin: int = 0, tta: str = '', size_multiple: int = 1,
                  batch_size: int = 8) -> np.ndarray:
  """float32 logits (N, H, W, K) of float images (N, H, W, C) (see the module doc).
  `tile` is an int or (h, w); raises ConfigError for a tile size that is not a multiple of
  `size_multiple`, an overlap/margin that cannot work or an unknown `tta`."""
  tile = (int(tile), int(tile)) if np.ndim(tile) == 0 else tuple(int(t) for t in tile)
  check_tiling(tile, overlap, margin, size_multiple)
  images = np.asarray(images, np.float32)
  pairs = views(tta)
  if tta == 'dihedral' and tile[0] != tile[1]:
    raise ConfigError(f'dihedral test-time augmentation rotates tiles by 90 degrees: it needs '
                      f"square tiles, not {tile[0]}x{tile[1]}; use 'flip_lr'")
  out = []
  for image in images:
    if not tta:
      out.append(_tiled(predict, image, tile, overlap, weighting, margin, batch_size))
      continue
    outputs = [inverse(_tiled(predict, np.ascontiguousarray(forward(image)), tile, overlap,
                              weighting, margin, batch_size))
               for forward, inverse in pairs]
    out.append(np.mean(outputs, axis=0).astype(np.float32))
  return np.stack(out)
