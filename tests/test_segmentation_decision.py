"""The fitted decision rule of segmentation reports (research/tasks/segmentation/report.py):
offsets against a brute-force search over the same grid, ignored pixels, three classes (a real
ISBI run evaluated with it: tests/test_segmentation_evaluate.py)."""
import numpy as np
import pytest

from research.tasks.segmentation import report

RNG = np.random.default_rng(0)


def _accuracy(log_probs, truth, offsets, ignore_label=255):
  valid = truth != ignore_label
  return np.mean(report.decide(log_probs, offsets)[valid] == truth[valid])


def test_two_classes_give_the_best_threshold_of_the_grid():
  p0 = RNG.uniform(size=(3, 20, 20))
  # membrane (class 0) where p0 > 0.6, with 10% of the labels flipped: the argmax (0.5) is off
  truth = np.where(p0 > 0.6, 0, 1)
  flip = RNG.uniform(size=truth.shape) < 0.1
  truth = np.where(flip, 1 - truth, truth)
  log_probs = np.log(np.stack([p0, 1 - p0], -1)).astype(np.float32)
  offsets = report.fit_decision_offsets(log_probs, truth)
  brute = [_accuracy(log_probs, truth, (0.0, b)) for b in report.OFFSET_GRID]
  assert offsets[0] == 0 and _accuracy(log_probs, truth, offsets) == max(brute)
  # ties go to the offset nearest 0; the threshold on p0 is near 0.6 (offset log(0.6/0.4))
  best = [b for b, a in zip(report.OFFSET_GRID, brute) if a == max(brute)]
  assert offsets[1] == min(best, key=abs)
  assert abs(offsets[1] - np.log(0.6 / 0.4)) < 0.15
  assert _accuracy(log_probs, truth, offsets) > _accuracy(log_probs, truth, None) + 0.02
  assert 'class 0 where p_0 > 0.' in report.describe_decision(offsets)
  np.testing.assert_array_equal(report.decide(log_probs), log_probs.argmax(-1))


def test_ignored_pixels_are_as_if_absent():
  p0 = RNG.uniform(size=(2, 16, 16))
  truth = np.where(p0 > 0.45, 0, 1)
  log_probs = np.log(np.stack([p0, 1 - p0], -1)).astype(np.float32)
  # cell pixels with p0 in (0.25, 0.45) relabelled membrane: they pull the threshold down ...
  relabelled = (p0 > 0.25) & (p0 < 0.45)
  wrong = np.where(relabelled, 0, truth)
  assert report.fit_decision_offsets(log_probs, wrong)[1] < np.log(0.3 / 0.7)
  # ... unless ignored: then the offsets are those of the other pixels alone
  ignored = np.where(relabelled, 255, wrong)
  kept = ignored != 255
  alone = report.fit_decision_offsets(log_probs[kept][None, :, None], truth[kept][None, :, None])
  np.testing.assert_array_equal(report.fit_decision_offsets(log_probs, ignored), alone)


def test_three_classes_reach_the_rule_that_made_the_labels():
  log_probs = np.log(RNG.dirichlet((1, 1, 1), size=(4, 12, 12))).astype(np.float32)
  made_by = np.array([0.0, 0.3, -0.2])
  truth = report.decide(log_probs, made_by)
  assert _accuracy(log_probs, truth, None) < 0.95
  offsets = report.fit_decision_offsets(log_probs, truth)
  assert _accuracy(log_probs, truth, offsets) == 1.0
  assert np.all(np.abs(offsets - made_by) <= 0.3), offsets


@pytest.mark.parametrize('num_classes', [2, 3])
def test_each_offset_is_the_best_of_the_grid_given_the_others_ties_as_argmax(num_classes):
  # log-probabilities on a lattice: many exact ties between classes and between pixels
  log_probs = np.log(RNG.dirichlet(np.ones(num_classes), size=(2, 30, 30)))
  log_probs = (np.round(log_probs / 0.0137) * 0.0137).astype(np.float32)
  truth = RNG.integers(0, num_classes, (2, 30, 30))
  offsets = report.fit_decision_offsets(log_probs, truth, sweeps=1)
  for k in range(1, num_classes):  # one pass: class k's offset given those fitted before it
    trial = lambda b: np.concatenate([offsets[:k], [b], np.zeros(num_classes - k - 1)])
    counts = [np.sum(report.decide(log_probs, trial(b)) == truth) for b in report.OFFSET_GRID]
    best = [b for b, c in zip(report.OFFSET_GRID, counts) if c == max(counts)]
    assert offsets[k] == min(best, key=abs), (k, offsets, best)
