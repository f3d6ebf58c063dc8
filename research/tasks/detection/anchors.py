"""Anchor shapes from the training boxes: k-means with the 1 - IoU distance (YOLOv2, Redmon &
Farhadi 2017, §"Dimension Clusters").

Boxes and anchors here are shapes, (width, height) in pixels, compared as if they shared a
centre: shape_iou(a, b) = min(w) min(h) / (w_a h_a + w_b h_b - min(w) min(h)). NumPy; runs once
before training.
"""
import numpy as np

from research.errors import ConfigError


def shape_iou(wh, anchors) -> np.ndarray:
  """(N, 2) x (K, 2) -> (N, K) IoU of centred boxes of those widths and heights."""
  wh, anchors = np.asarray(wh, np.float64), np.asarray(anchors, np.float64)
  inter = (np.minimum(wh[:, None, 0], anchors[None, :, 0])
           * np.minimum(wh[:, None, 1], anchors[None, :, 1]))
  union = (wh[:, 0] * wh[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None, :] - inter
  return inter / np.maximum(union, 1e-12)


def _lloyd(wh, centroids, max_iterations):
  assignment = None
  for _ in range(max_iterations):
    distance = 1.0 - shape_iou(wh, centroids)
    new = np.argmin(distance, axis=1)
    if assignment is not None and np.array_equal(new, assignment):
      break
    assignment = new
    for j in range(len(centroids)):
      members = wh[assignment == j]
      if len(members):
        centroids[j] = members.mean(axis=0)
      else:  # an empty cluster restarts at the box farthest from every centroid
        centroids[j] = wh[np.argmax(distance.min(axis=1))]
        distance = 1.0 - shape_iou(wh, centroids)
  return centroids


def kmeans_anchors(wh, k: int, seed: int = 0, restarts: int = 5,
                   max_iterations: int = 300) -> np.ndarray:
  """k anchor shapes (k, 2) float32 in pixels, sorted by area, clustering `wh` (N, 2) pixels.

  Lloyd's k-means with d(box, centroid) = 1 - shape_iou: each iteration assigns every box to
  its nearest centroid (ties to the lowest index) and moves each centroid to the mean (w, h) of
  its boxes (an empty cluster restarts at the box farthest from all centroids), until the
  assignment no longer changes. Centroids start by k-means++ seeding (Arthur & Vassilvitskii
  2007) under the same distance, drawn from `np.random.default_rng(seed)`; of `restarts` runs,
  the one with the highest mean best IoU is kept. Raises ConfigError if there are fewer
  distinct shapes than k.
  """
  wh = np.asarray(wh, np.float64).reshape(-1, 2)
  wh = wh[(wh[:, 0] > 0) & (wh[:, 1] > 0)]
  distinct = np.unique(wh, axis=0)
  if len(distinct) < k:
    raise ConfigError(f'{k} anchors need at least {k} distinct box shapes; the training boxes '
                      f'have {len(distinct)}: lower detection.num_anchors')
  rng = np.random.default_rng(seed)
  best, best_score = None, -1.0
  for _ in range(restarts):
    centroids = [distinct[rng.integers(len(distinct))]]
    while len(centroids) < k:
      d2 = (1.0 - shape_iou(distinct, np.asarray(centroids)).max(axis=1)) ** 2
      centroids.append(distinct[rng.choice(len(distinct), p=d2 / d2.sum())])
    centroids = _lloyd(wh, np.asarray(centroids), max_iterations)
    score = mean_best_iou(wh, centroids)
    if score > best_score:
      best, best_score = centroids, score
  return best[np.argsort(best[:, 0] * best[:, 1], kind='stable')].astype(np.float32)


def mean_best_iou(wh, anchors) -> float:
  """The mean over boxes of their best shape IoU with an anchor (YOLOv2's "Avg IOU")."""
  return float(shape_iou(np.asarray(wh).reshape(-1, 2), anchors).max(axis=1).mean())


def check_anchors(anchors, num_anchors: int | None = None) -> np.ndarray:
  """Anchors from a config as (K, 2) float32 pixels; ConfigError unless every width and height
  is positive and, given `num_anchors` (the head's), K equals it."""
  array = np.asarray(anchors, np.float32)
  if array.ndim != 2 or array.shape[1] != 2 or not len(array):
    raise ConfigError(f'anchors must be (width, height) pairs in pixels, e.g. ((12, 16), '
                      f'(24, 30)); got {anchors!r}')
  if np.any(array <= 0):
    raise ConfigError(f'anchor widths and heights must be positive; got {array.tolist()}')
  if num_anchors is not None and len(array) != num_anchors:
    raise ConfigError(f'{len(array)} anchors given but the detection head predicts {num_anchors} '
                      'per cell: make detection.anchors and detection.num_anchors agree')
  return array
