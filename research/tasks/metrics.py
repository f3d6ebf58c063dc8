"""Classification metrics as sums over examples (research/training/metric_sums.py combines
them over batches, devices and processes), and what they finalize into.

Besides loss, accuracy and top-k accuracy, evaluation accumulates the confusion matrix and the
calibration bins, so a run's summary also reports macro F1 and the expected calibration error:

- macro F1: the unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN), a class with
  no true and no predicted examples counting as F1 0 (scikit-learn's `zero_division=0`);
- ECE (Guo et al. 2017, "On calibration of modern neural networks"): 15 equal-width bins on
  the top-label confidence max_k softmax_k, ECE = sum_b (n_b / N) |accuracy_b - confidence_b|.
"""
import jax
import jax.numpy as jnp
import numpy as np

CALIBRATION_BINS = 15


def correct(logits, labels):
  """1.0 where the arg-max class is the label."""
  return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def top_k_correct(logits, labels, k: int):
  """1.0 where the label is among the k highest logits."""
  _, top = jax.lax.top_k(logits, k)
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def calibration_bin(confidence, bins: int = CALIBRATION_BINS):
  """The equal-width bin of each confidence in [0, 1]: bin b holds (b/B, (b+1)/B], bin 0 also 0."""
  return jnp.clip(jnp.ceil(confidence * bins).astype(jnp.int32) - 1, 0, bins - 1)


def classification_sums(logits, labels, losses, mask=None, top_k: int = 0,
                        confusion: bool = False) -> dict:
  """Per-batch totals. With `confusion`, also the confusion matrix (true class x predicted
  class) and, per calibration bin, the count, summed confidence and summed correctness."""
  mask = jnp.ones(labels.shape, jnp.float32) if mask is None else mask
  hits = correct(logits, labels)
  sums = {'loss': jnp.sum(losses * mask), 'accuracy': jnp.sum(hits * mask),
          'count': jnp.sum(mask)}
  if 0 < top_k < logits.shape[-1]:
    sums[f'top{top_k}_accuracy'] = jnp.sum(top_k_correct(logits, labels, top_k) * mask)
  if confusion:
    k = logits.shape[-1]
    predicted = jnp.argmax(logits, axis=-1)
    pairs = labels * k + predicted
    sums['confusion'] = jnp.zeros(k * k, jnp.float32).at[pairs].add(mask).reshape(k, k)
    confidence = jnp.max(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), axis=-1)
    b = calibration_bin(confidence)
    sums['calibration'] = jnp.stack([
        jnp.zeros(CALIBRATION_BINS).at[b].add(mask),
        jnp.zeros(CALIBRATION_BINS).at[b].add(confidence * mask),
        jnp.zeros(CALIBRATION_BINS).at[b].add(hits * mask)])
  return sums


def macro_f1(confusion: np.ndarray) -> float:
  """Unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN), 0 where that is 0/0."""
  confusion = np.asarray(confusion, np.float64)
  tp = np.diag(confusion)
  fp, fn = confusion.sum(axis=0) - tp, confusion.sum(axis=1) - tp
  denominator = 2 * tp + fp + fn
  return float(np.mean(np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1e-300), 0.0)))


def expected_calibration_error(calibration: np.ndarray) -> float:
  """ECE from the bin sums [count, confidence, correct] (shape (3, bins))."""
  count, confidence, hits = np.asarray(calibration, np.float64)
  total = count.sum()
  return float(np.sum(np.abs(hits - confidence)) / total) if total else 0.0


def finalize(sums: dict) -> dict[str, float]:
  """Means of the summed metrics, plus macro F1 and ECE where the sums carry them."""
  count = max(float(sums['count']), 1.0)
  out = {k: float(v) / count for k, v in sums.items()
         if k not in ('count', 'confusion', 'calibration')}
  if 'confusion' in sums:
    out['macro_f1'] = macro_f1(sums['confusion'])
  if 'calibration' in sums:
    out['ece'] = expected_calibration_error(sums['calibration'])
  return out
