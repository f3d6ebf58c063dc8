"""Detection library: box ops, anchors, target assignment, loss, decoding + NMS, COCO mAP,
box-aware augmentation, the Darknet backbone and the detector builder."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.data import box_augment
from research.errors import ConfigError
from research.models import build_detector, build_model
from research.tasks.detection import anchors as anchor_lib
from research.tasks.detection import boxes as box_ops
from research.tasks.detection.decode import decode_boxes, encode_boxes
from research.tasks.detection.evaluation import coco_metrics
from research.tasks.detection.loss import LossConfig, yolo_loss
from research.tasks.detection.nms import detect, non_max_suppression
from research.tasks.detection.targets import assign_targets

# ---------------------------------------------------------------------------- box ops


def test_conversions_round_trip_and_area():
  xyxy = jnp.array([[1.0, 2.0, 5.0, 8.0], [0.0, 0.0, 3.0, 1.0]])
  cxcywh = box_ops.xyxy_to_cxcywh(xyxy)
  np.testing.assert_allclose(cxcywh, [[3, 5, 4, 6], [1.5, 0.5, 3, 1]])
  np.testing.assert_allclose(box_ops.cxcywh_to_xyxy(cxcywh), xyxy)
  np.testing.assert_allclose(box_ops.area(xyxy), [24, 3])
  assert float(box_ops.area(jnp.array([2.0, 2.0, 1.0, 5.0]))) == 0.0  # inverted: empty


def test_iou_giou_ciou_against_hand_computed_values():
  # Two 2x2 squares overlapping in a unit square: IoU 1/7, enclosing 3x3.
  a, b = jnp.array([0.0, 0, 2, 2]), jnp.array([1.0, 1, 3, 3])
  np.testing.assert_allclose(box_ops.iou(a, b), 1 / 7, rtol=1e-6)
  np.testing.assert_allclose(box_ops.giou(a, b), 1 / 7 - 2 / 9, rtol=1e-6)
  # Same aspect (v = 0): CIoU = IoU - rho^2 / c^2 = 1/7 - 2/18.
  np.testing.assert_allclose(box_ops.ciou(a, b), 1 / 7 - 2 / 18, rtol=1e-6)
  # A 4x2 and a 2x4 box sharing a corner: IoU 4/12, enclosing 4x4, centres sqrt(2) apart.
  a, b = jnp.array([0.0, 0, 4, 2]), jnp.array([0.0, 0, 2, 4])
  v = 4 / math.pi ** 2 * (math.atan(2) - math.atan(0.5)) ** 2
  alpha = v / (1 - 1 / 3 + v)
  np.testing.assert_allclose(box_ops.iou(a, b), 1 / 3, rtol=1e-6)
  np.testing.assert_allclose(box_ops.giou(a, b), 1 / 3 - 4 / 16, rtol=1e-6)
  np.testing.assert_allclose(box_ops.ciou(a, b), 1 / 3 - 2 / 32 - alpha * v, rtol=1e-5)
  # Disjoint boxes: IoU 0, GIoU -(3 - 2) / 3.
  a, b = jnp.array([0.0, 0, 1, 1]), jnp.array([2.0, 0, 3, 1])
  assert float(box_ops.iou(a, b)) == 0.0
  np.testing.assert_allclose(box_ops.giou(a, b), -1 / 3, rtol=1e-6)
  # Identical boxes: 1 for all three; a pairwise matrix agrees with the elementwise IoU.
  for fn in (box_ops.iou, box_ops.giou, box_ops.ciou):
    np.testing.assert_allclose(fn(a, a), 1.0, rtol=1e-6)
  many = jax.random.uniform(jax.random.key(0), (5, 4)) * 10
  many = jnp.concatenate([many[:, :2], many[:, :2] + many[:, 2:] + 0.5], axis=1)
  np.testing.assert_allclose(box_ops.pairwise_iou(many, many[:3]),
                             box_ops.iou(many[:, None], many[None, :3]), rtol=1e-6)


def test_box_losses_have_finite_gradients_on_empty_boxes():
  zero = jnp.zeros(4)
  for fn in (box_ops.iou, box_ops.giou, box_ops.ciou):
    grad = jax.grad(lambda p: fn(p, zero))(jnp.array([1.0, 1, 3, 4]))
    assert bool(jnp.all(jnp.isfinite(grad)))


# ---------------------------------------------------------------------------- anchors


def test_kmeans_finds_obvious_clusters_with_iou_distance():
  rng = np.random.default_rng(0)
  centres = np.array([[10, 10], [40, 20], [20, 60]], float)
  wh = np.concatenate([c * rng.uniform(0.95, 1.05, (200, 2)) for c in centres])
  anchors = anchor_lib.kmeans_anchors(wh, 3, seed=0)
  np.testing.assert_allclose(anchors, centres[np.argsort(centres.prod(axis=1))], rtol=0.03)
  np.testing.assert_array_equal(anchors, anchor_lib.kmeans_anchors(wh, 3, seed=0))  # seeded
  assert anchor_lib.mean_best_iou(wh, anchors) > 0.9
  np.testing.assert_allclose(anchor_lib.shape_iou([[2, 4]], [[4, 2], [2, 4]]), [[4 / 12, 1.0]])
  with pytest.raises(ConfigError, match='distinct box shapes'):
    anchor_lib.kmeans_anchors([[5, 5]] * 10, 2)


def test_anchor_checks_name_the_mismatch():
  with pytest.raises(ConfigError, match='3 anchors given but the detection head predicts 2'):
    anchor_lib.check_anchors([[1, 2], [3, 4], [5, 6]], num_anchors=2)
  with pytest.raises(ConfigError, match='positive'):
    anchor_lib.check_anchors([[1, -2]])
  with pytest.raises(ConfigError, match='pairs'):
    anchor_lib.check_anchors([1, 2, 3])


# ---------------------------------------------------------------------------- targets

ANCHORS = jnp.array([[8.0, 8.0], [16.0, 32.0]])
BOXES = jnp.array([[2.0, 2, 10, 10],    # centre (6, 6): cell (0, 0), 8x8: anchor 0
                   [12.0, 0, 28, 32],   # centre (20, 16): cell (2, 2), 16x32: anchor 1
                   [3.0, 3, 9, 9],      # cell (0, 0) too, best anchor 0 taken -> anchor 1
                   [0.0, 0, 32, 32],    # padding (mask False): must be ignored
                   [4.0, 4, 8, 8]])     # cell (0, 0) again, every anchor taken -> none
CLASSES = jnp.array([3, 1, 2, 0, 4])
MASK = jnp.array([True, True, True, False, True])


def test_assignment_by_centre_cell_and_best_anchor_with_conflicts():
  jitted = jax.jit(assign_targets, static_argnums=(4, 5))
  t = jitted(BOXES, CLASSES, MASK, ANCHORS, (4, 4), (32, 32))
  expected = -np.ones((4, 4, 2), int)
  expected[0, 0, 0], expected[2, 2, 1], expected[0, 0, 1] = 0, 1, 2
  np.testing.assert_array_equal(t['index'], expected)
  np.testing.assert_array_equal(t['object'], expected >= 0)
  np.testing.assert_array_equal(t['boxes'][0, 0, 1], BOXES[2])
  np.testing.assert_array_equal(t['boxes'][2, 2, 1], BOXES[1])
  assert int(t['classes'][0, 0, 0]) == 3 and int(t['classes'][2, 2, 1]) == 1
  assert float(jnp.abs(t['boxes'][expected < 0]).sum()) == 0.0
  # The result does not depend on where the padding row is.
  order = jnp.array([3, 0, 1, 2, 4])
  again = jitted(BOXES[order], CLASSES[order], MASK[order], ANCHORS, (4, 4), (32, 32))
  np.testing.assert_array_equal(again['object'], t['object'])
  np.testing.assert_array_equal(again['boxes'], t['boxes'])


# ---------------------------------------------------------------------------- decoding and loss


def test_decode_inverts_encode_and_keeps_centres_in_their_cell():
  raw = jax.random.normal(jax.random.key(0), (2, 4, 4, 2, 9)) * 2
  boxes = jax.jit(decode_boxes, static_argnums=2)(raw, ANCHORS, (32, 32))
  again = jax.jit(encode_boxes, static_argnums=2)(boxes, ANCHORS, (32, 32))
  np.testing.assert_allclose(again, raw[..., :4], atol=1e-3)
  centre = box_ops.xyxy_to_cxcywh(boxes)
  cols = np.floor(np.asarray(centre[..., 0]) / 8)
  np.testing.assert_array_equal(cols, np.broadcast_to(np.arange(4)[None, None, :, None],
                                                     cols.shape))


@jax.jit
def _perfect_prediction(boxes, classes, mask, num_classes=5, logit=20.0):
  t = jax.vmap(lambda b, c, m: assign_targets(b, c, m, ANCHORS, (4, 4), (32, 32)))(
      boxes, classes, mask)
  raw_box = encode_boxes(t['boxes'], ANCHORS, (32, 32))
  objectness = jnp.where(t['object'] > 0, logit, -logit)[..., None]
  class_logits = logit * jax.nn.one_hot(t['classes'], num_classes)
  return jnp.concatenate([raw_box, objectness, class_logits], axis=-1), t


def test_loss_vanishes_for_a_perfect_prediction_and_grows_when_shifted():
  boxes, classes, mask = BOXES[None], CLASSES[None], MASK[None]
  raw, t = _perfect_prediction(boxes, classes, mask)
  index = np.asarray(t['index'][0])
  rows, slots = index[index >= 0], np.nonzero(index >= 0)

  def ground_truth(r):
    # The decoded prediction itself, so that the two are equal to the last bit: IoU losses have
    # a kink at the optimum (like |x|), and only there is their gradient 0.
    decoded = jax.lax.stop_gradient(decode_boxes(r, ANCHORS, (32, 32))[0])
    return boxes.at[0, rows].set(decoded[slots])

  def loss(r, gt, **kw):
    return yolo_loss(r, gt, classes, mask, ANCHORS, (32, 32), LossConfig(**kw))

  @jax.jit
  def terms_and_gradients(r):
    gt = ground_truth(r)
    per_term = lambda x: jnp.stack([loss(x, gt)[k][0] for k in ('box', 'class', 'object')])
    jacobian = jax.jacrev(per_term)(r)  # one backward pass per term
    return loss(r, gt), dict(zip(('box', 'class', 'object'), jacobian)), \
        loss(r, gt, box_loss='giou')

  terms, grads, giou_terms = terms_and_gradients(raw)
  assert float(terms['positives'][0]) == 3
  assert float(terms['box'][0]) < 1e-6 and float(giou_terms['box'][0]) < 1e-6
  assert float(terms['class'][0]) < 1e-6
  assert float(terms['object'][0]) < 1e-5  # 32 BCE terms of ~2e-9 each
  assert float(jnp.max(jnp.abs(grads['box']))) == 0.0
  assert float(jnp.max(jnp.abs(grads['class']))) < 1e-7
  assert float(jnp.max(jnp.abs(grads['object']))) < 1e-7
  # Moving a responsible box's centre or size raises the box loss, and the total.
  gt = ground_truth(raw)
  for channel in (0, 3):
    shifted = jax.jit(loss)(raw.at[0, 2, 2, 1, channel].add(1.0), gt)
    assert float(shifted['box'][0]) > 0.05
    assert float(shifted['loss'][0]) > float(terms['loss'][0]) + 0.05
  wrong_class = raw.at[0, 0, 0, 0, 5:].set(jnp.roll(raw[0, 0, 0, 0, 5:], 1))
  assert float(jax.jit(loss)(wrong_class, gt)['class'][0]) > 10


def test_iou_aware_objectness_targets_the_fit_of_the_box_without_moving_it():
  boxes, classes, mask = BOXES[None], CLASSES[None], MASK[None]
  raw, t = _perfect_prediction(boxes, classes, mask)
  assert float(t['object'][0, 2, 2, 1]) == 1  # a responsible anchor, moved off its box:
  moved = raw.at[0, 2, 2, 1, 0].add(0.8).at[0, 2, 2, 1, 3].add(-0.3)
  a = np.asarray(decode_boxes(moved, ANCHORS, (32, 32))[0, 2, 2, 1], np.float64)
  b = np.asarray(t['boxes'][0, 2, 2, 1], np.float64)
  w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
  inter = max(w, 0) * max(h, 0)
  fit = inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
  assert 0.3 < fit < 0.9
  bce = lambda x, y: np.log1p(np.exp(-abs(x))) + max(x, 0) - x * y  # BCE with logits
  logit, r = float(moved[0, 2, 2, 1, 4]), 0.7
  terms = lambda **kw: yolo_loss(moved, boxes, classes, mask, ANCHORS, (32, 32),
                                 LossConfig(**kw))['object'][0]
  # Only that anchor's target changes (the others fit their boxes: IoU 1, target 1 either way).
  np.testing.assert_allclose(float(terms(object_target_iou=r)) - float(terms()),
                             bce(logit, 1 - r + r * fit) - bce(logit, 1.0), atol=2e-4)
  # The IoU is a target, not a path: the objectness term moves no box coordinate.
  box_gradient = jax.grad(lambda x: yolo_loss(x, boxes, classes, mask, ANCHORS, (32, 32),
                                              LossConfig(object_target_iou=r))['object'][0])(moved)
  assert float(jnp.max(jnp.abs(box_gradient[..., :4]))) == 0.0
  assert float(jnp.abs(box_gradient[0, 2, 2, 1, 4])) > 0.1
  with pytest.raises(ConfigError, match=r'object_target_iou must be in \[0, 1\], got 1.5'):
    LossConfig(object_target_iou=1.5)


def test_loss_ignores_padding_and_good_non_responsible_predictions():
  boxes, classes, mask = BOXES[None], CLASSES[None], MASK[None]
  raw, t = _perfect_prediction(boxes, classes, mask)

  @jax.jit
  def loss(r, b, ignore_iou=0.5):
    return yolo_loss(r, b, classes, mask, ANCHORS, (32, 32),
                     LossConfig(ignore_iou=ignore_iou))['loss'][0]

  # Padding rows count for nothing, whatever their coordinates.
  garbage = boxes.at[0, 3].set(jnp.array([5.0, 7, 6, 30]))
  np.testing.assert_allclose(loss(raw, garbage), loss(raw, boxes), rtol=1e-6)
  # A non-responsible anchor (cell (1, 2), anchor 1) confidently predicting a box with IoU 0.97
  # to box 1 is not penalised as background under the ignore rule, and is without it.
  near = jnp.array([12.0, -0.5, 28, 31.5])
  cell = encode_boxes(jnp.broadcast_to(near, (1, 4, 4, 2, 4)), ANCHORS, (32, 32))
  spare = raw.at[0, 1, 2, 1, :4].set(cell[0, 1, 2, 1]).at[0, 1, 2, 1, 4].set(5.0)
  np.testing.assert_allclose(loss(spare, boxes), loss(raw, boxes), atol=1e-4)
  assert float(loss(spare, boxes, 1.0)) > float(loss(raw, boxes)) + 4
  # Per image: a batch's terms equal each image's alone.
  two = jax.jit(yolo_loss, static_argnums=(5,))(
      jnp.concatenate([raw, raw * 0.5]), jnp.concatenate([boxes, boxes]),
      jnp.concatenate([classes, classes]), jnp.concatenate([mask, mask]), ANCHORS, (32, 32))
  np.testing.assert_allclose(two['loss'][0], loss(raw, boxes), rtol=1e-5)
  with pytest.raises(ConfigError, match='unknown box loss'):
    LossConfig(box_loss='l2')


# ---------------------------------------------------------------------------- NMS


def _iou_of(a, b):
  w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def _reference_nms(boxes, scores, classes, iou_threshold, score_threshold, max_detections):
  """Brute-force greedy NMS in NumPy: visit by score, keep unless a kept box of the same class
  overlaps with IoU > threshold."""
  kept = []
  for i in np.argsort(-scores, kind='stable'):
    if scores[i] < score_threshold:
      continue
    if all(classes[j] != classes[i] or _iou_of(boxes[i], boxes[j]) <= iou_threshold
           for j in kept):
      kept.append(i)
  return kept[:max_detections]


def _reference_votes(kept, boxes, scores, classes, score_threshold, vote_iou):
  """Box voting by loops: each kept box becomes the score-weighted mean of the candidates of its
  class overlapping it with IoU > vote_iou."""
  out = []
  for i in kept:
    members = [j for j in range(len(boxes)) if scores[j] >= score_threshold
               and classes[j] == classes[i] and _iou_of(boxes[i], boxes[j]) > vote_iou]
    out.append(sum(scores[j] * boxes[j].astype(np.float64) for j in members)
               / sum(scores[j] for j in members))
  return np.array(out).reshape(-1, 4)


@pytest.mark.parametrize('seed,iou_threshold,score_threshold,max_detections,vote_iou',
                         [(0, 0.5, 0.0, 100, 0.0), (1, 0.3, 0.2, 100, 0.0), (2, 0.7, 0.1, 5, 0.0),
                          (3, 0.45, 0.05, 12, 0.0), (4, 0.5, 0.1, 100, 0.6),
                          (5, 0.3, 0.0, 20, 0.4)])
def test_nms_equals_brute_force(seed, iou_threshold, score_threshold, max_detections, vote_iou):
  rng = np.random.default_rng(seed)
  k = 80
  corner = rng.uniform(0, 40, (k, 2))
  boxes = np.concatenate([corner, corner + rng.uniform(4, 20, (k, 2))], axis=1).astype(np.float32)
  scores = rng.uniform(size=k).astype(np.float32)
  classes = rng.integers(0, 3, k)
  out = jax.jit(non_max_suppression, static_argnums=(3, 4, 5, 6))(
      boxes, scores, classes, iou_threshold, score_threshold, max_detections, vote_iou)
  kept = _reference_nms(boxes, scores, classes, iou_threshold, score_threshold, max_detections)
  n = len(kept)
  assert int(out['valid'].sum()) == n and bool(out['valid'][:n].all())
  if vote_iou:
    voted = _reference_votes(kept, boxes, scores, classes, score_threshold, vote_iou)
    np.testing.assert_allclose(out['boxes'][:n], voted, rtol=1e-5, atol=1e-4)
    assert np.abs(voted - boxes[kept]).max() > 0.1  # votes moved some boxes
  else:
    np.testing.assert_array_equal(out['boxes'][:n], boxes[kept])
  np.testing.assert_array_equal(out['scores'][:n], scores[kept])
  np.testing.assert_array_equal(out['classes'][:n], classes[kept])
  assert float(jnp.abs(out['boxes'][n:]).sum()) == 0.0


def test_detect_recovers_a_perfect_prediction():
  raw, _ = _perfect_prediction(BOXES[None], CLASSES[None], MASK[None])
  out = jax.jit(lambda r: detect(r, ANCHORS, (32, 32), score_threshold=0.5, iou_threshold=0.5,
                                 max_detections=6))(raw)
  valid = np.asarray(out['valid'][0])
  assert valid.sum() == 3  # box 4 found no anchor, padding is not an object
  found = {(int(c), tuple(np.round(np.asarray(b), 3))) for b, c, v in
           zip(out['boxes'][0], out['classes'][0], valid) if v}
  assert found == {(int(CLASSES[i]), tuple(np.asarray(BOXES[i]))) for i in (0, 1, 2)}


# ---------------------------------------------------------------------------- COCO mAP


def _ground_truth():
  boxes = np.array([[[2, 2, 20, 30], [40, 40, 60, 70], [0, 0, 0, 0]],
                    [[10, 5, 30, 25], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)
  return {'boxes': boxes, 'classes': np.array([[0, 2, 0], [2, 0, 0]]),
          'mask': np.array([[True, True, False], [True, False, False]])}


def _as_detections(gt, shift=0.0):
  return {'boxes': gt['boxes'] + shift, 'scores': np.ones(gt['mask'].shape, np.float32),
          'classes': gt['classes'], 'valid': gt['mask']}


def test_coco_map_is_one_for_the_ground_truth_and_drops_when_shifted():
  gt = _ground_truth()
  perfect = coco_metrics(gt, _as_detections(gt), 3, ['zero', 'one', 'two'])
  assert perfect['mAP'] == pytest.approx(1.0) and perfect['mAP50'] == pytest.approx(1.0)
  assert perfect['AP/zero'] == pytest.approx(1.0) and perfect['AP/two'] == pytest.approx(1.0)
  assert 'AP/one' not in perfect  # class 1 has no ground truth: no AP, not in the mean
  shifted = coco_metrics(gt, _as_detections(gt, 3.0), 3)
  assert shifted['mAP'] < 0.9 and shifted['mAP50'] == pytest.approx(1.0)
  # A missed class counts as AP 0 in the mean.
  missing = _as_detections(gt)
  missing['valid'] = missing['valid'] & (gt['classes'] != 0)
  result = coco_metrics(gt, missing, 3)
  assert result['AP/0'] == 0.0 and result['mAP'] == pytest.approx(0.5)
  nothing = dict(missing, valid=np.zeros_like(missing['valid']))
  assert coco_metrics(gt, nothing, 3)['mAP'] == 0.0
  with pytest.raises(ValueError, match='no ground-truth'):
    coco_metrics(dict(gt, mask=np.zeros_like(gt['mask'])), nothing, 3)


# ---------------------------------------------------------------------------- augmentation


def _drawn(boxes, mask, size=48):
  """Float images with each valid box filled with 1 (integer boxes)."""
  images = np.zeros((len(boxes), size, size, 1), np.float32)
  for image, bs, ms in zip(images, np.asarray(boxes).astype(int), np.asarray(mask)):
    for (x1, y1, x2, y2), m in zip(bs, ms):
      if m:
        image[y1:y2, x1:x2] = 1.0
  return images


def _ink_box(image):
  ys, xs = np.nonzero(image[..., 0] > 0.5)
  return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) if len(xs) else None


def test_augmented_boxes_stay_on_the_drawn_rectangles():
  rng = np.random.default_rng(0)
  n = 24
  corner = rng.integers(4, 30, (n, 2))
  boxes = np.zeros((n, 2, 4), np.float32)
  boxes[:, 0] = np.concatenate([corner, corner + rng.integers(6, 16, (n, 2))], axis=1)
  mask = np.array([[True, False]] * n)
  images = _drawn(boxes, mask)
  out_images, out_boxes, out_mask = jax.jit(
      lambda i, b, m, k: box_augment.augment(i, b, m, k, flip_prob=0.5, scale=(0.6, 1.5),
                                             translate=0.25, min_visible=0.25))(
      images, boxes, mask, jax.random.key(3))
  out_images, out_boxes, out_mask = map(np.asarray, (out_images, out_boxes, out_mask))
  assert not out_mask[:, 1].any() and not out_boxes[:, 1].any()  # padding stays padding
  kept = 0
  for image, box, keep in zip(out_images, out_boxes[:, 0], out_mask[:, 0]):
    ink = _ink_box(image)
    if keep:
      kept += 1
      assert ink is not None
      np.testing.assert_allclose(ink, box, atol=1.0)  # bilinear edges: within a pixel
    elif ink is not None:  # dropped: less than a quarter of the box is left in the image
      assert (ink[2] - ink[0]) * (ink[3] - ink[1]) < 0.35 * 48 * 48
  assert kept >= n // 2
  # Flips happen, and the same key gives the same result.
  flipped = box_augment.flip_lr(images, boxes, mask, jax.random.key(1), prob=1.0)
  np.testing.assert_array_equal(flipped[0], images[:, :, ::-1])
  np.testing.assert_allclose(flipped[1][:, 0, 0], 48 - boxes[:, 0, 2])


def test_warp_equals_dm_pix_inside_the_image():
  import dm_pix as pix
  image = jax.random.uniform(jax.random.key(0), (40, 48, 2))
  warp = jax.jit(box_augment.warp)
  for s, ty, tx in ((0.7, -3.0, 5.0), (1.3, 2.5, -4.0), (1.0, 0.0, 0.0)):
    h, w, _ = image.shape
    oy, ox = (0.5 - h / 2 - ty) / s + h / 2 - 0.5, (0.5 - w / 2 - tx) / s + w / 2 - 0.5
    reference = pix.affine_transform(image, jnp.diag(jnp.array([1 / s, 1 / s, 1.0])),
                                     offset=jnp.array([oy, ox, 0.0]), order=1, mode='constant')
    ours = warp(image, s, ty, tx)
    # Output pixels whose source lies inside the outermost pixel centres (dm-pix gives the fill
    # beyond them; `warp` blends the last half pixel with the fill).
    rows = (np.arange(h) / s + oy >= 0) & (np.arange(h) / s + oy <= h - 1)
    cols = (np.arange(w) / s + ox >= 0) & (np.arange(w) / s + ox <= w - 1)
    inside = rows[:, None] & cols[None, :]
    np.testing.assert_allclose(np.asarray(ours)[inside], np.asarray(reference)[inside], atol=1e-5)
    if s == 1.0:
      np.testing.assert_allclose(ours, image, atol=1e-6)
  filled = box_augment.warp(jnp.zeros((8, 8, 1)), 0.5, 0.0, 0.0, fill=0.25)
  np.testing.assert_allclose(filled[0, 0, 0], 0.25)  # outside the shrunken image: the fill
  np.testing.assert_allclose(filled[4, 4, 0], 0.0)   # inside it: the image


def test_boxes_mostly_outside_are_dropped_and_the_rest_clipped():
  boxes = jnp.array([[[-10.0, 0, 10, 10], [-30.0, 0, 2, 10], [5.0, 5, 9, 9]]])
  clipped, keep = box_augment.clip_boxes(boxes, jnp.array([[True, True, False]]), 32, 32, 0.25)
  np.testing.assert_array_equal(keep, [[True, False, False]])
  np.testing.assert_array_equal(clipped[0, 0], [0, 0, 10, 10])
  assert float(jnp.abs(clipped[0, 1:]).sum()) == 0.0


def test_training_stops_augmenting_at_its_stop_step():
  from research.tasks.detection.task import Augmentation, detection
  config = {'name': 'darknet_tiny', 'widths': (8, 8, 8, 8), 'depths': (0, 0, 0)}
  model = build_detector(config, num_classes=10, num_anchors=2, hidden=8)
  rng = np.random.default_rng(0)
  batch = {'image': rng.integers(0, 256, (2, 96, 96, 1)).astype(np.uint8),
           'boxes': np.array([[[10, 12, 30, 40], [0, 0, 0, 0]]] * 2, np.float32),
           'classes': np.array([[3, 0]] * 2, np.int32), 'box_mask': np.array([[True, False]] * 2)}
  variables = model.init(jax.random.key(0), jnp.zeros((1, 96, 96, 1)))
  anchors = [(12.0, 20.0), (24.0, 30.0)]
  augment = Augmentation(scale=(0.5, 0.7), translate=0.2)

  def loss(augmentation, **step):
    task = detection(model, anchors, (96, 96), 10, ([0.1], [0.3]), augmentation=augmentation)
    fn = jax.jit(lambda key, **kw: task.train_loss(variables['params'],
                                                   variables['batch_stats'], batch, key, **kw))
    return task.takes_step, float(fn(jax.random.key(5), **step)[0])

  takes, always = loss(augment)
  _, never = loss(Augmentation())
  assert not takes and abs(always - never) > 1e-3  # the augmentation changes the loss
  stopping = dataclasses.replace(augment, stop_step=7)
  assert loss(stopping, step=jnp.int32(6)) == (True, pytest.approx(always, rel=1e-6))
  assert loss(stopping, step=jnp.int32(7)) == (True, pytest.approx(never, rel=1e-6))


# ---------------------------------------------------------------------------- models


def test_darknet_tiny_features_and_detector_on_it():
  config = {'name': 'darknet_tiny', 'widths': (8, 16, 32, 64), 'depths': (1, 0, 1)}
  x = jnp.zeros((2, 96, 96, 1))
  model = build_model(config, 10)
  logits, features = jax.eval_shape(
      lambda: model.apply(model.init(jax.random.key(0), x), x, return_features=True))
  assert logits.shape == (2, 10)
  assert [features[k].shape[1:] for k in ('stem', 'stage1', 'stage2', 'stage3')] == [
      (96, 96, 8), (48, 48, 16), (24, 24, 32), (12, 12, 64)]
  detector = build_detector(config, num_classes=10, num_anchors=4, hidden=32)
  variables = jax.jit(detector.init)(jax.random.key(0), x)
  raw = jax.jit(detector.apply)(variables, x + 0.5)
  assert raw.shape == (2, 12, 12, 4, 15)
  # The objectness bias starts at logit(0.01): every cell starts out predicting ~1% objects.
  assert 0.001 < float(jax.nn.sigmoid(raw[..., 4]).mean()) < 0.05
  on_stage2 = build_detector(config, 10, 3, feature='stage2', hidden=16)
  shape = jax.eval_shape(lambda: on_stage2.apply(on_stage2.init(jax.random.key(0), x), x)).shape
  assert shape == (2, 24, 24, 3, 15)
  with pytest.raises(ConfigError, match="no feature map 'stage9'"):
    bad = build_detector(config, 10, 3, feature='stage9')
    jax.eval_shape(bad.init, jax.random.key(0), x)
  # YOLOv3's top-down path: stage3 (12x12x64) -> 1x1 conv to 32 -> x2 -> concatenated on stage2.
  merged = build_detector(config, 10, 3, feature='stage2', hidden=16, merge='stage3')
  v = jax.eval_shape(merged.init, jax.random.key(0), x)
  assert jax.eval_shape(lambda: merged.apply(merged.init(jax.random.key(0), x), x)).shape == (
      2, 24, 24, 3, 15)
  assert v['params']['merge']['conv']['kernel'].shape == (1, 1, 64, 32)
  assert v['params']['head']['conv']['conv']['kernel'].shape == (3, 3, 64, 16)  # 32 + 32 in
  for feature, merge, message in (('stage2', 'stage9', "no feature map 'stage9'"),
                                  ('stage1', 'stage3', "'stage3' \\(12x12\\) must be half")):
    with pytest.raises(ConfigError, match=message):
      bad = build_detector(config, 10, 3, feature=feature, merge=merge)
      jax.eval_shape(bad.init, jax.random.key(0), x)
  with pytest.raises(ConfigError, match='one depth per stage'):
    jax.eval_shape(build_model({'name': 'darknet_tiny', 'depths': (1,)}, 10).init,
                   jax.random.key(0), x)
