"""Box arithmetic on (..., 4) arrays in pixels: conversions, area, IoU, GIoU, CIoU.

Boxes are `xyxy` = (xmin, ymin, xmax, ymax) in continuous pixel coordinates (pixel column c
spans [c, c + 1), so a box around columns 3..5 has xmin 3, xmax 6), or `cxcywh` = (centre x,
centre y, width, height). Every function broadcasts over the leading axes, is jittable and
differentiable, and guards its divisions with EPS so that empty or padding boxes give finite
values and gradients.

  IoU  = |A ∩ B| / |A ∪ B|
  GIoU = IoU - |C \\ (A ∪ B)| / |C|, C the smallest box enclosing both (Rezatofighi et al. 2019,
         "Generalized Intersection over Union"), in [-1, 1]
  CIoU = IoU - ρ²/c² - α v (Zheng et al. 2020, "Distance-IoU Loss"): ρ the distance between the
         centres, c the diagonal of C, v = 4/π² (atan(w_B/h_B) - atan(w_A/h_A))², α = v / (1 -
         IoU + v). α is a constant in the gradient (as in the authors' code), so the aspect term
         pulls only through v.
The losses are 1 - GIoU and 1 - CIoU.
"""
import jax
import jax.numpy as jnp

EPS = 1e-9


def xyxy_to_cxcywh(boxes):
  x1, y1, x2, y2 = jnp.moveaxis(boxes, -1, 0)
  return jnp.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=-1)


def cxcywh_to_xyxy(boxes):
  cx, cy, w, h = jnp.moveaxis(boxes, -1, 0)
  return jnp.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def area(boxes):
  """Width x height, 0 for boxes with xmax <= xmin or ymax <= ymin. Shape (...,)."""
  return (jnp.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
          * jnp.maximum(boxes[..., 3] - boxes[..., 1], 0.0))


def _intersection_union(a, b):
  w = jnp.maximum(jnp.minimum(a[..., 2], b[..., 2]) - jnp.maximum(a[..., 0], b[..., 0]), 0.0)
  h = jnp.maximum(jnp.minimum(a[..., 3], b[..., 3]) - jnp.maximum(a[..., 1], b[..., 1]), 0.0)
  inter = w * h
  return inter, area(a) + area(b) - inter


def _enclosing(a, b):
  """Width and height of the smallest box enclosing a and b."""
  return (jnp.maximum(a[..., 2], b[..., 2]) - jnp.minimum(a[..., 0], b[..., 0]),
          jnp.maximum(a[..., 3], b[..., 3]) - jnp.minimum(a[..., 1], b[..., 1]))


def iou(a, b):
  """IoU of xyxy boxes a and b (broadcast), in [0, 1]."""
  inter, union = _intersection_union(a, b)
  return inter / (union + EPS)


def pairwise_iou(a, b):
  """(N, 4) x (M, 4) -> (N, M) IoU of every pair."""
  return iou(a[:, None, :], b[None, :, :])


def giou(a, b):
  """Generalized IoU of xyxy boxes (broadcast), in [-1, 1]."""
  inter, union = _intersection_union(a, b)
  cw, ch = _enclosing(a, b)
  enclosing = cw * ch
  return inter / (union + EPS) - (enclosing - union) / (enclosing + EPS)


def ciou(a, b):
  """Complete IoU of xyxy boxes (broadcast), in [-1.5, 1]: which of a, b is the target does not
  matter for the value (v is symmetric)."""
  inter, union = _intersection_union(a, b)
  overlap = inter / (union + EPS)
  cw, ch = _enclosing(a, b)
  diagonal2 = cw ** 2 + ch ** 2
  ca, cb = xyxy_to_cxcywh(a), xyxy_to_cxcywh(b)
  distance2 = (ca[..., 0] - cb[..., 0]) ** 2 + (ca[..., 1] - cb[..., 1]) ** 2
  aspect = lambda box: jnp.arctan(box[..., 2] / (box[..., 3] + EPS))
  v = (4 / jnp.pi ** 2) * (aspect(ca) - aspect(cb)) ** 2
  alpha = jax.lax.stop_gradient(v / (1 - overlap + v + EPS))
  return overlap - distance2 / (diagonal2 + EPS) - alpha * v
