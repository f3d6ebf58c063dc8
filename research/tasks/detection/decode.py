"""The YOLOv2/v3 box parameterisation (Redmon & Farhadi 2017, 2018): raw head outputs <-> boxes.

The head (research/models/blocks.YOLOHead) gives raw outputs (N, Sy, Sx, A, 5 + C): per cell
(i, j) and anchor a, (tx, ty, tw, th, to, class logits...). With strides
(H / Sy, W / Sx) in pixels and anchor shapes (pw, ph) in pixels:

  cx = (j + sigmoid(tx)) * stride_x        w = pw * exp(tw)
  cy = (i + sigmoid(ty)) * stride_y        h = ph * exp(th)
  objectness = sigmoid(to)                 class probabilities = softmax(class logits)

so a box's centre stays inside the cell that predicts it. tw and th are clipped at
MAX_LOG_SCALE before exp (a box at most e^6 ~ 400 times its anchor) so that a diverging
prediction cannot overflow.
"""
import jax
import jax.numpy as jnp

from research.errors import ConfigError
from research.tasks.detection import boxes as box_ops

MAX_LOG_SCALE = 6.0


def strides(grid: tuple[int, int], image_size: tuple[int, int]) -> tuple[float, float]:
  """(stride_y, stride_x) in pixels; ConfigError unless the grid divides the image."""
  (sy, sx), (h, w) = grid, image_size
  if h % sy or w % sx:
    raise ConfigError(f'the detection grid {sy}x{sx} does not divide the {h}x{w} image; choose an '
                      'image size that is a multiple of the feature map\'s stride')
  return h / sy, w / sx


def cell_offsets(grid: tuple[int, int]):
  """(Sy, Sx, 1) arrays of each cell's row i and column j, float32."""
  i, j = jnp.meshgrid(jnp.arange(grid[0], dtype=jnp.float32),
                      jnp.arange(grid[1], dtype=jnp.float32), indexing='ij')
  return i[..., None], j[..., None]


def decode_boxes(raw, anchors, image_size):
  """raw (..., Sy, Sx, A, >= 4) -> xyxy boxes (..., Sy, Sx, A, 4) float32 in pixels."""
  grid = raw.shape[-4:-2]
  stride_y, stride_x = strides(grid, image_size)
  i, j = cell_offsets(grid)
  anchors = jnp.asarray(anchors, jnp.float32)
  cx = (j + jax.nn.sigmoid(raw[..., 0])) * stride_x
  cy = (i + jax.nn.sigmoid(raw[..., 1])) * stride_y
  w = anchors[:, 0] * jnp.exp(jnp.minimum(raw[..., 2], MAX_LOG_SCALE))
  h = anchors[:, 1] * jnp.exp(jnp.minimum(raw[..., 3], MAX_LOG_SCALE))
  return box_ops.cxcywh_to_xyxy(jnp.stack([cx, cy, w, h], axis=-1))


def encode_boxes(boxes, anchors, image_size, eps: float = 1e-6):
  """The inverse of `decode_boxes`: xyxy boxes laid out on the grid (..., Sy, Sx, A, 4) ->
  (tx, ty, tw, th) (..., Sy, Sx, A, 4). A box whose centre is outside its cell gets the
  offset clipped to [eps, 1 - eps] (finite logits); empty boxes give finite nonsense."""
  grid = boxes.shape[-4:-2]
  stride_y, stride_x = strides(grid, image_size)
  i, j = cell_offsets(grid)
  anchors = jnp.asarray(anchors, jnp.float32)
  cx, cy, w, h = jnp.moveaxis(box_ops.xyxy_to_cxcywh(boxes), -1, 0)
  logit = lambda p: jnp.log(p) - jnp.log1p(-p)
  ox = jnp.clip(cx / stride_x - j, eps, 1 - eps)
  oy = jnp.clip(cy / stride_y - i, eps, 1 - eps)
  tw = jnp.log(jnp.maximum(w, eps) / anchors[:, 0])
  th = jnp.log(jnp.maximum(h, eps) / anchors[:, 1])
  return jnp.stack([logit(ox), logit(oy), tw, th], axis=-1)
