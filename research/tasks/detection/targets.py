"""Training targets for the YOLO head (YOLOv2/v3 assignment), built jittably from padded boxes.

Each valid ground-truth box (xyxy pixels, research/tasks/detection/boxes.py) is assigned to the
grid cell containing its centre (cell row floor(cy / stride_y), column floor(cx / stride_x),
clipped to the grid) and, in that cell, to the anchor whose shape best matches it (the
highest shape IoU, anchors.shape_iou; ties to the lowest anchor index). That anchor is
"responsible" for the box: its objectness target is 1 and it regresses the box and its class.

Two boxes wanting the same cell: boxes are placed one at a time in order of decreasing area
(ties: the order of the list), and each takes the best-matching anchor of its cell that is
still free; a box that finds every anchor of its cell taken gets none (it then trains nothing
directly, but still protects matching predictions from the background loss through the
ignore rule in loss.py, and still counts in evaluation). The outcome is deterministic.
"""
import jax
import jax.numpy as jnp

from research.tasks.detection import boxes as box_ops
from research.tasks.detection.decode import strides


def _shape_iou(wh, anchors):
  inter = jnp.minimum(wh[0], anchors[:, 0]) * jnp.minimum(wh[1], anchors[:, 1])
  return inter / (wh[0] * wh[1] + anchors[:, 0] * anchors[:, 1] - inter + box_ops.EPS)


def assign_targets(boxes, classes, mask, anchors, grid: tuple[int, int],
                   image_size: tuple[int, int]) -> dict:
  """Targets of one image.

  Args:
    boxes: (M, 4) float xyxy pixels; classes: (M,) int; mask: (M,) bool, False on padding.
    anchors: (A, 2) anchor (width, height) in pixels. grid: (Sy, Sx) of the head's output.
    image_size: (H, W) in pixels.
  Returns:
    {'object': (Sy, Sx, A) float32 1 at responsible anchors, else 0;
     'boxes': (Sy, Sx, A, 4) float32 the assigned box (0 elsewhere);
     'classes': (Sy, Sx, A) int32 its class (0 elsewhere);
     'index': (Sy, Sx, A) int32 the assigned box's row in `boxes` (-1 elsewhere)}.
  """
  sy, sx = grid
  stride_y, stride_x = strides(grid, image_size)
  anchors = jnp.asarray(anchors, jnp.float32)
  num_anchors = anchors.shape[0]
  boxes = boxes.astype(jnp.float32)
  centre_wh = box_ops.xyxy_to_cxcywh(boxes)
  valid = mask.astype(bool) & (centre_wh[:, 2] > 0) & (centre_wh[:, 3] > 0)
  rows = jnp.clip(jnp.floor(centre_wh[:, 1] / stride_y), 0, sy - 1).astype(jnp.int32)
  cols = jnp.clip(jnp.floor(centre_wh[:, 0] / stride_x), 0, sx - 1).astype(jnp.int32)
  order = jnp.argsort(jnp.where(valid, -box_ops.area(boxes), jnp.inf), stable=True)

  def place(index, m):
    i, j = rows[m], cols[m]
    scores = jnp.where(index[i, j] >= 0, -1.0, _shape_iou(centre_wh[m, 2:], anchors))
    a = jnp.argmax(scores)
    take = valid[m] & (scores[a] >= 0)
    return index.at[i, j, a].set(jnp.where(take, m, index[i, j, a])), None

  index, _ = jax.lax.scan(place, jnp.full((sy, sx, num_anchors), -1, jnp.int32), order)
  has_object = index >= 0
  safe = jnp.maximum(index, 0)
  return {'object': has_object.astype(jnp.float32),
          'boxes': jnp.where(has_object[..., None], boxes[safe], 0.0),
          'classes': jnp.where(has_object, classes.astype(jnp.int32)[safe], 0),
          'index': index}


def batch_targets(boxes, classes, mask, anchors, grid, image_size) -> dict:
  """`assign_targets` over a batch: boxes (N, M, 4), classes (N, M), mask (N, M)."""
  return jax.vmap(lambda b, c, m: assign_targets(b, c, m, anchors, grid, image_size))(
      boxes, classes, mask)
