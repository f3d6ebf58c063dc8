"""Segmentation losses, weight maps and metrics against NumPy references and hand computation."""
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from research.errors import ConfigError
from research.tasks.segmentation import losses, metrics, weight_maps

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(3, 5, 4, 3)).astype(np.float32)
LABELS = RNG.integers(0, 3, size=(3, 5, 4))
LABELS[0, 0, :2] = 255  # ignored pixels
LABELS[2] = 255         # an example without a valid pixel


def np_log_softmax(x):
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def test_cross_entropy_with_ignore_label_and_class_weights():
  class_weights = np.array([0.5, 2.0, 1.0])
  pixels = np.ones((3, 5, 4))
  pixels[1, 2] = 3.0
  got = np.asarray(losses.cross_entropy(jnp.asarray(LOGITS), jnp.asarray(LABELS),
                                        class_weights=class_weights, pixel_weights=jnp.asarray(pixels)))
  lp = np_log_softmax(LOGITS.astype(np.float64))
  for n in range(2):  # weighted mean of -log p over the valid pixels, torch's convention
    total = weight = 0.0
    for i in range(5):
      for j in range(4):
        y = LABELS[n, i, j]
        if y == 255:
          continue
        w = class_weights[y] * pixels[n, i, j]
        total += -w * lp[n, i, j, y]
        weight += w
    assert got[n] == pytest.approx(total / weight, rel=1e-5)
  assert got[2] == 0.0  # nothing valid: 0, not NaN
  # unweighted: the plain mean over valid pixels
  plain = np.asarray(losses.cross_entropy(jnp.asarray(LOGITS), jnp.asarray(LABELS)))
  valid = LABELS[0] != 255
  log_p = np.take_along_axis(lp[0], np.where(valid, LABELS[0], 0)[..., None], -1)[..., 0]
  expected = -log_p[valid].mean()
  assert plain[0] == pytest.approx(expected, rel=1e-5)


def test_soft_dice_follows_milletari():
  got = np.asarray(losses.soft_dice(jnp.asarray(LOGITS), jnp.asarray(LABELS), smooth=1.0))
  p = np.exp(np_log_softmax(LOGITS.astype(np.float64)))
  for n in range(3):
    valid = LABELS[n] != 255
    dice = []
    for k in range(3):
      pk, gk = p[n, ..., k][valid], (LABELS[n] == k)[valid].astype(float)
      dice.append((2 * (pk * gk).sum() + 1) / ((pk ** 2).sum() + (gk ** 2).sum() + 1))
    assert got[n] == pytest.approx(1 - np.mean(dice), rel=1e-5)
  assert got[2] == pytest.approx(0.0)  # nothing valid: every class scores (0 + 1) / (0 + 1)
  # a confident, correct prediction has a loss near 0; squared=False uses sum p + sum g
  labels = np.array([[[0, 1], [1, 1]]])
  sure = 20.0 * (np.eye(2)[labels] * 2 - 1)
  assert float(losses.soft_dice(jnp.asarray(sure), jnp.asarray(labels), smooth=0.0)[0]) < 1e-6
  half = np.zeros((1, 2, 2, 2))  # p = 0.5 everywhere: D_k = 2 * 0.5 n_k / (2 + n_k)
  expected = 1 - np.mean([2 * 0.5 * 1 / (2 + 1), 2 * 0.5 * 3 / (2 + 3)])
  got = losses.soft_dice(jnp.asarray(half), jnp.asarray(labels), smooth=0.0, squared=False)
  assert float(got[0]) == pytest.approx(expected, rel=1e-6)


def test_focal_loss_reduces_to_cross_entropy_at_gamma_zero_and_follows_lin():
  ce = np.asarray(losses.cross_entropy(jnp.asarray(LOGITS), jnp.asarray(LABELS)))
  f0 = np.asarray(losses.focal(jnp.asarray(LOGITS), jnp.asarray(LABELS), gamma=0.0))
  np.testing.assert_allclose(f0, ce, rtol=1e-5)
  alpha = np.array([0.25, 0.5, 0.75])
  got = np.asarray(losses.focal(jnp.asarray(LOGITS), jnp.asarray(LABELS), gamma=2.0,
                                class_weights=alpha))
  lp = np_log_softmax(LOGITS.astype(np.float64))
  valid = LABELS[1] != 255
  logp = np.take_along_axis(lp[1], np.where(valid, LABELS[1], 0)[..., None], -1)[..., 0]
  per_pixel = -alpha[np.where(valid, LABELS[1], 0)] * (1 - np.exp(logp)) ** 2 * logp
  assert got[1] == pytest.approx(per_pixel[valid].mean(), rel=1e-5)


def test_loss_specs_combine_terms():
  logits, labels = jnp.asarray(LOGITS), jnp.asarray(LABELS)
  combined = losses.make_loss('ce+0.5*dice')(logits, labels)
  expected = losses.cross_entropy(logits, labels) + 0.5 * losses.soft_dice(logits, labels)
  np.testing.assert_allclose(combined, expected, rtol=1e-6)
  pixels = jnp.asarray(RNG.uniform(1, 3, size=(3, 5, 4)), jnp.float32)
  np.testing.assert_allclose(losses.make_loss('weighted_ce')(logits, labels, pixels),
                             losses.cross_entropy(logits, labels, pixel_weights=pixels), rtol=1e-6)
  assert losses.parse_loss('2*focal + ce') == [(2.0, 'focal'), (1.0, 'ce')]
  with pytest.raises(ConfigError, match="unknown segmentation loss term 'lovasz' in 'ce\\+lovasz'"):
    losses.parse_loss('ce+lovasz')


def test_balanced_class_weights():
  masks = np.array([[0, 0, 0, 1], [1, 255, 0, 0]])  # 5 zeros, 2 ones (255 ignored)
  w = weight_maps.balanced_class_weights(masks, 3)
  np.testing.assert_allclose(w, [7 / (3 * 5), 7 / (3 * 2), 0.0], rtol=1e-6)


def untruncated_weight_map(mask, w0, sigma):
  """The definition, computed naively: every cell's full distance transform."""
  cells, count = ndimage.label(mask == 1)  # 4-connectivity, as skimage's connectivity=1
  distances = np.sort(np.stack([ndimage.distance_transform_edt(cells != i)
                                for i in range(1, count + 1)]), axis=0)
  d1, d2 = distances[0], distances[1] if count > 1 else np.full(mask.shape, np.inf)
  return 1.0 + np.where(mask != 1, w0 * np.exp(-(d1 + d2) ** 2 / (2 * sigma ** 2)), 0.0)


def test_border_weight_map_matches_the_untruncated_definition():
  # cells: blocks separated by 1-3 pixel membranes, and a far-away cell
  mask = np.zeros((40, 60), np.uint8)
  mask[2:15, 2:20] = 1
  mask[2:15, 21:35] = 1   # 1 pixel from the first
  mask[17:30, 2:35] = 1   # 2-3 pixels below them
  mask[5:10, 50:58] = 1
  got = weight_maps.border_weight_map(mask, w0=10, sigma=5)
  expected = untruncated_weight_map(mask, 10, 5)
  np.testing.assert_allclose(got, expected, atol=10 * np.exp(-18) + 1e-6)
  # the membrane between the two touching cells: d1 = d2 = 1 -> 1 + 10 exp(-4 / 50)
  assert got[8, 20] == pytest.approx(1 + 10 * np.exp(-4 / 50), rel=1e-6)
  assert got[8, 10] == 1.0  # inside a cell: w_c only
  # class weights and the ignore label
  mask[0, 0] = 255
  weighted = weight_maps.border_weight_map(mask, class_weights=[2.0, 0.5])
  assert weighted[0, 0] == 0.0 and weighted[8, 10] == 0.5
  assert weighted[8, 20] == pytest.approx(2 + 10 * np.exp(-4 / 50), rel=1e-6)


def test_confusion_matrix_counts_by_hand():
  labels = np.array([[[0, 0, 1], [1, 2, 255]], [[2, 2, 2], [0, 1, 1]]])
  predicted = np.array([[[0, 1, 1], [1, 0, 0]], [[2, 2, 0], [0, 1, 0]]])
  c = np.asarray(metrics.confusion_matrix(jnp.asarray(predicted), jnp.asarray(labels), 3))
  # (true, predicted) pairs; example 0: (0,0) (0,1) (1,1) (1,1) (2,0), the 255 ignored;
  # example 1: (2,2) (2,2) (2,0) (0,0) (1,1) (1,0)
  np.testing.assert_array_equal(c, [[2, 1, 0], [1, 3, 0], [2, 0, 2]])
  only_first = metrics.confusion_matrix(jnp.asarray(predicted), jnp.asarray(labels), 3,
                                        example_mask=jnp.asarray([1.0, 0.0]))
  np.testing.assert_array_equal(only_first, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])


def test_scores_from_the_confusion_matrix_by_hand():
  c = np.array([[2, 1, 0], [1, 3, 0], [2, 0, 2]])
  s = metrics.scores(c, ('a', 'b', 'c'))
  assert s['pixel_accuracy'] == pytest.approx(7 / 11)
  # IoU = TP / (row + column - TP): a 2/(3+5-2), b 3/(4+4-3), c 2/(4+2-2)
  assert s['iou_a'] == pytest.approx(2 / 6) and s['iou_b'] == pytest.approx(3 / 5)
  assert s['iou_c'] == pytest.approx(2 / 4)
  assert s['dice_a'] == pytest.approx(4 / 8) and s['dice_c'] == pytest.approx(4 / 6)
  assert s['mean_iou'] == pytest.approx((2 / 6 + 3 / 5 + 2 / 4) / 3)
  # an empty class (0/0) is NaN and left out of the means; predicted-but-absent scores 0
  empty = metrics.scores(np.array([[5, 1, 0], [2, 4, 0], [0, 0, 0]]), ('a', 'b', 'c'))
  assert np.isnan(empty['iou_c']) and np.isnan(empty['dice_c'])
  assert empty['mean_iou'] == pytest.approx((5 / 8 + 4 / 7) / 2)
  absent = metrics.scores(np.array([[5, 1], [0, 0]]), ('a', 'b'))
  assert absent['iou_b'] == 0.0 and absent['mean_iou'] == pytest.approx(5 / 12)


def test_sums_over_batches_equal_the_whole_split():
  # the metric of the split is the metric of the summed matrix, not the mean of batch metrics
  labels = RNG.integers(0, 2, size=(6, 8, 8))
  logits = RNG.normal(size=(6, 8, 8, 2)).astype(np.float32)
  logits[:3, ..., 1] += 3.0  # the first batch predicts class 1 nearly everywhere
  per_example = np.zeros(6, np.float32)
  sums = [metrics.segmentation_sums(jnp.asarray(logits[i:i + 3]), jnp.asarray(labels[i:i + 3]),
                                    jnp.asarray(per_example[i:i + 3]), jnp.ones(3), 2)
          for i in (0, 3)]
  total = {k: sums[0][k] + sums[1][k] for k in sums[0]}
  whole = metrics.finalize(total, ('m', 'c'))
  predicted = logits.argmax(-1)
  assert whole['pixel_accuracy'] == pytest.approx((predicted == labels).mean())
  tp = ((predicted == 0) & (labels == 0)).sum()
  assert whole['iou_m'] == pytest.approx(tp / ((predicted == 0) | (labels == 0)).sum())
  batch_means = np.mean([metrics.finalize(s, ('m', 'c'))['iou_m'] for s in sums])
  assert abs(batch_means - whole['iou_m']) > 1e-3  # the two differ here


def test_region_scores_by_hand():
  truth = np.array([[1, 1, 0, 1, 1]])      # two cells
  merged = np.array([[1, 1, 1, 1, 1]])     # one predicted cell covering both
  s = metrics.region_scores(merged, truth)
  # pairs of the 4 foreground pixels in one segment: 2 in the truth, 6 in the prediction,
  # 2 in both: F = 2 * 2 / (2 + 6) = 0.5
  assert s['adapted_rand_error'] == pytest.approx(0.5)
  # H(truth | prediction) = 1 bit (the predicted cell is half A, half B); nothing is split
  assert s['vi_merge'] == pytest.approx(1.0) and s['vi_split'] == pytest.approx(0.0)
  perfect = metrics.region_scores(truth, truth)
  assert perfect['adapted_rand_error'] == pytest.approx(0.0) and perfect['vi'] == pytest.approx(0.0)
  # a predicted membrane pixel inside a true cell joins its nearest predicted cell
  thick = np.array([[1, 0, 0, 1, 1]])
  assert metrics.region_scores(thick, truth)['adapted_rand_error'] == pytest.approx(0.0)
  # one true cell, predicted as 2 + 2 pixels around a membrane pixel that joins one of them:
  # H(prediction | truth) = H(3/5, 2/5); without growing, the membrane is a third segment
  one_cell, cut = np.ones((1, 5), int), np.array([[1, 1, 0, 1, 1]])
  h = lambda *p: -sum(x * np.log2(x) for x in p)
  s = metrics.region_scores(cut, one_cell)
  assert s['vi_split'] == pytest.approx(h(0.6, 0.4)) and s['vi_merge'] == pytest.approx(0.0)
  # pairs in one segment: 10 in the truth, 3 + 1 in the prediction, 4 in both
  assert s['adapted_rand_error'] == pytest.approx(1 - 2 * 4 / (10 + 4))
  raw = metrics.region_scores(cut, one_cell, expand_prediction=False)
  assert raw['vi_split'] == pytest.approx(h(0.4, 0.2, 0.4))


def test_boundary_distance_by_hand():
  # Class 0 in the left two columns, class 1 right of them; one ignored pixel in column 3.
  truth = np.array([[0, 0, 1, 1, 1],
                    [0, 0, 1, 255, 1],
                    [0, 0, 1, 1, 1]])
  d = metrics.boundary_distance(truth, 2)
  np.testing.assert_allclose(d[0], [2, 1, 1, 2, 3])
  assert d[1, 3] == np.inf and d[1, 4] == 3  # ignored: no distance, and no boundary either
  # a lone pixel of another class: diagonal neighbours are sqrt(2) away
  lone = np.ones((3, 3), int)
  lone[1, 1] = 0
  np.testing.assert_allclose(metrics.boundary_distance(lone, 2),
                             [[2 ** 0.5, 1, 2 ** 0.5], [1, 1, 1], [2 ** 0.5, 1, 2 ** 0.5]])
  assert np.all(metrics.boundary_distance(np.ones((2, 2), int), 2) == np.inf)  # one class only


def test_trimap_scores_by_hand():
  truth = np.zeros((2, 4, 6), int)
  truth[:, :, 3:] = 1           # a vertical boundary between columns 2 and 3: distances 3 2 1 1 2 3
  truth[1] = 1                  # the second image has one class only: no band pixel
  truth[0, 0, 0] = 255          # ignored: not scored
  predicted = truth.copy()
  predicted[0, 0, 2] = 1        # wrong at distance 1
  predicted[0, 1, 1] = 1        # wrong at distance 2
  predicted[0, 2, 0] = 1        # wrong at distance 3
  predicted[1, 0, 0] = 0        # wrong, far from any boundary
  predicted[0, 0, 0] = 1        # ignored pixel: counts for nothing
  s = metrics.trimap_scores(predicted, truth, 2, widths=(1, 2, 4))
  # band 1: columns 2 and 3 of image 0 (8 pixels), 1 wrong; band 2: columns 1-4, 16 pixels, 2
  # wrong; band 4: image 0's 23 labelled pixels, 3 wrong. 4 wrong pixels in all.
  assert s['trimap_accuracy_1px'] == pytest.approx(7 / 8)
  assert s['trimap_accuracy_2px'] == pytest.approx(14 / 16)
  assert s['trimap_accuracy_4px'] == pytest.approx(20 / 23)
  assert [s[f'trimap_error_share_{w}px'] for w in (1, 2, 4)] == pytest.approx([1 / 4, 2 / 4, 3 / 4])
  empty = metrics.trimap_scores(truth[1:], truth[1:], 2, widths=(1,))
  assert np.isnan(empty['trimap_accuracy_1px']) and np.isnan(empty['trimap_error_share_1px'])
  perfect = metrics.trimap_scores(truth, truth, 2, widths=(1,))  # no wrong pixel: no share
  assert perfect['trimap_accuracy_1px'] == 1.0 and np.isnan(perfect['trimap_error_share_1px'])
  given = metrics.trimap_scores(predicted, truth, 2, widths=(1, 2, 4),
                                distance=metrics.boundary_distances(truth, 2))
  assert given == s
