"""From raw head outputs to detections: decoding, a confidence threshold and class-aware greedy
non-maximum suppression, jittable, with a fixed maximum number of detections per image.

Each cell and anchor proposes one box (decode.py) with the class of highest probability and
the score objectness x that probability (YOLOv2/v3). Candidates are ranked by score (ties: the
earlier candidate in row-major cell, anchor order first), the best `pre_nms_top_k` are kept,
those below `score_threshold` dropped, and greedy NMS keeps a candidate unless an already kept
candidate of the same class overlaps it with IoU > `iou_threshold` (torchvision's
batched_nms rule). With `vote_iou` > 0, each kept box is then replaced by box voting (Gidaris &
Komodakis 2015; YOLOv5's merge-NMS weighs by IoU x score instead): the score-weighted mean of
the candidates of its class (itself included, suppressed ones too) overlapping it with IoU >
`vote_iou`; scores and classes stay. The first `max_detections` kept, best first, are returned
padded, with a validity mask.
"""
import jax
import jax.numpy as jnp

from research.tasks.detection import boxes as box_ops
from research.tasks.detection.decode import decode_boxes


def non_max_suppression(boxes, scores, classes, iou_threshold: float, score_threshold: float,
                        max_detections: int, vote_iou: float = 0.0) -> dict:
  """Class-aware greedy NMS for one image.

  Args:
    boxes: (K, 4) xyxy; scores: (K,) float; classes: (K,) int.
  Returns:
    {'boxes': (D, 4), 'scores': (D,), 'classes': (D,) int32, 'valid': (D,) bool} with
    D = max_detections, the kept candidates best first, zeros (and valid False) after them.
  """
  order = jnp.argsort(-scores, stable=True)
  boxes, scores, classes = boxes[order], scores[order], classes[order].astype(jnp.int32)
  k = scores.shape[0]
  overlap = box_ops.pairwise_iou(boxes, boxes)
  conflicts = (overlap > iou_threshold) & (classes[:, None] == classes[None, :])
  candidate = scores >= score_threshold

  def visit(i, state):
    keep, suppressed = state
    kept = candidate[i] & ~suppressed[i]
    return keep.at[i].set(kept), suppressed | (kept & conflicts[i])

  keep, _ = jax.lax.fori_loop(0, k, visit, (jnp.zeros(k, bool), jnp.zeros(k, bool)))
  if vote_iou > 0:
    same = classes[:, None] == classes[None, :]
    weights = jnp.where((overlap > vote_iou) & same & candidate[None, :], scores[None, :], 0.0)
    total = jnp.sum(weights, axis=1, keepdims=True)
    voted = (weights @ boxes) / jnp.maximum(total, 1e-12)
    boxes = jnp.where(keep[:, None] & (total > 0), voted, boxes)
  slot = jnp.where(keep, jnp.cumsum(keep) - 1, max_detections)  # past the end: dropped
  take = lambda x: jnp.zeros((max_detections, *x.shape[1:]), x.dtype).at[slot].set(x, mode='drop')
  return {'boxes': take(boxes), 'scores': take(scores), 'classes': take(classes),
          'valid': take(keep)}


def detect(raw, anchors, image_size, score_threshold: float = 0.01, iou_threshold: float = 0.5,
           max_detections: int = 100, pre_nms_top_k: int = 400, vote_iou: float = 0.0) -> dict:
  """Detections of a batch: raw (N, Sy, Sx, A, 5 + C) -> {'boxes': (N, D, 4) xyxy pixels,
  'scores': (N, D) in [0, 1], 'classes': (N, D) int32, 'valid': (N, D) bool}."""
  raw = raw.astype(jnp.float32)
  n = raw.shape[0]
  boxes = decode_boxes(raw, anchors, image_size).reshape(n, -1, 4)
  probabilities = jax.nn.softmax(raw[..., 5:], axis=-1).reshape(n, -1, raw.shape[-1] - 5)
  scores = jax.nn.sigmoid(raw[..., 4]).reshape(n, -1) * jnp.max(probabilities, axis=-1)
  classes = jnp.argmax(probabilities, axis=-1)
  top = min(pre_nms_top_k, scores.shape[1])

  def one(b, s, c):
    best = jnp.argsort(-s, stable=True)[:top]
    return non_max_suppression(b[best], s[best], c[best], iou_threshold, score_threshold,
                               max_detections, vote_iou)

  return jax.vmap(one)(boxes, scores, classes)
