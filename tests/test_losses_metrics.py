"""Losses and metrics against independent NumPy computations."""
import numpy as np
import pytest

from research.tasks import losses, metrics
from research.training import metric_sums

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(6, 4)).astype(np.float32)
LABELS = np.array([0, 1, 2, 3, 1, 2])


def numpy_cross_entropy(logits, labels, smoothing):
  z = logits - logits.max(-1, keepdims=True)
  log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
  k = logits.shape[-1]
  q = np.full_like(logits, smoothing / k)
  q[np.arange(len(labels)), labels] += 1 - smoothing
  return -(q * log_p).sum(-1)


@pytest.mark.parametrize('smoothing', [0.0, 0.1, 0.3])
def test_cross_entropy_matches_numpy(smoothing):
  np.testing.assert_allclose(losses.softmax_cross_entropy(LOGITS, LABELS, smoothing),
                             numpy_cross_entropy(LOGITS, LABELS, smoothing), rtol=1e-5)


def test_uniform_logits_give_log_k():
  out = losses.softmax_cross_entropy(np.zeros((2, 10), np.float32), np.array([3, 7]))
  np.testing.assert_allclose(out, np.log(10.0), rtol=1e-6)


def test_mean_squared_error():
  p = RNG.normal(size=(3, 2, 2)).astype(np.float32)
  t = RNG.normal(size=(3, 2, 2)).astype(np.float32)
  np.testing.assert_allclose(losses.mean_squared_error(p, t), ((p - t) ** 2).mean(axis=(1, 2)),
                             rtol=1e-6)
  onehot = np.eye(4, dtype=np.float32)[LABELS]
  np.testing.assert_allclose(losses.one_hot_mean_squared_error(LOGITS, LABELS),
                             ((LOGITS - onehot) ** 2).mean(-1), rtol=1e-6)


def test_masked_mean_ignores_padding():
  assert float(losses.masked_mean(np.array([1.0, 3.0, 100.0]), np.array([1.0, 1.0, 0.0]))) == 2.0


def test_accuracy_and_top_k_by_hand():
  logits = np.array([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5]], np.float32)
  labels = np.array([1, 1, 0])
  np.testing.assert_array_equal(metrics.correct(logits, labels), [1, 0, 0])
  np.testing.assert_array_equal(metrics.top_k_correct(logits, labels, 2), [1, 1, 0])
  np.testing.assert_array_equal(metrics.top_k_correct(logits, labels, 3), [1, 1, 1])


def test_classification_sums_combine_exactly_over_batches():
  per_example = numpy_cross_entropy(LOGITS, LABELS, 0.0)
  mask = np.array([1, 1, 1, 1, 0, 0], np.float32)  # the last two rows are padding
  a = metrics.classification_sums(LOGITS[:3], LABELS[:3], per_example[:3], mask[:3], top_k=2)
  b = metrics.classification_sums(LOGITS[3:], LABELS[3:], per_example[3:], mask[3:], top_k=2)
  result = metric_sums.finalize(metric_sums.add(a, b))
  assert result['loss'] == pytest.approx(per_example[:4].mean(), rel=1e-5)
  assert result['accuracy'] == pytest.approx((LOGITS[:4].argmax(-1) == LABELS[:4]).mean())
  top2 = np.argsort(-LOGITS[:4], -1)[:, :2]
  assert result['top2_accuracy'] == pytest.approx((top2 == LABELS[:4, None]).any(-1).mean())


def test_macro_f1_and_ece_sums_match_scikit_learn_and_a_hand_computation():
  from sklearn.metrics import f1_score
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(500, 5)).astype(np.float32) * 3
  labels = rng.integers(0, 4, 500)  # class 4 never occurs: its F1 is 0 (zero_division=0)
  mask = (rng.random(500) > 0.1).astype(np.float32)
  losses = np.zeros(500, np.float32)
  parts = [metrics.classification_sums(logits[i:i + 128], labels[i:i + 128], losses[i:i + 128],
                                       mask[i:i + 128], confusion=True) for i in range(0, 500, 128)]
  total = parts[0]
  for part in parts[1:]:
    total = metric_sums.add(total, part)
  result = metrics.finalize(total)
  keep = mask > 0
  predicted = logits.argmax(-1)
  assert result['macro_f1'] == pytest.approx(
      f1_score(labels[keep], predicted[keep], labels=range(5), average='macro', zero_division=0),
      rel=1e-6)
  # ECE by hand: 15 equal-width bins (b/15, (b+1)/15] on the top-label softmax confidence.
  z = logits[keep] - logits[keep].max(-1, keepdims=True)
  p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
  confidence, hit = p.max(-1), (p.argmax(-1) == labels[keep])
  ece = 0.0
  for b in range(15):
    in_bin = (confidence > b / 15) & (confidence <= (b + 1) / 15)
    if in_bin.any():
      ece += in_bin.mean() * abs(hit[in_bin].mean() - confidence[in_bin].mean())
  assert result['ece'] == pytest.approx(ece, rel=1e-5)
  assert result['accuracy'] == pytest.approx(hit.mean(), rel=1e-6)


def test_perfectly_calibrated_predictions_have_zero_ece():
  # Every example predicts its class with confidence 0.9 and is right 9 times out of 10.
  logits = np.full((100, 2), 0.0, np.float32)
  logits[:, 0] = np.log(9.0)  # softmax = (0.9, 0.1)
  labels = np.array([0] * 90 + [1] * 10)
  sums = metrics.classification_sums(logits, labels, np.zeros(100), confusion=True)
  assert metrics.finalize(sums)['ece'] == pytest.approx(0.0, abs=1e-6)
