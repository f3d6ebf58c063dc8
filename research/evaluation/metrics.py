"""The numbers a paper or an audit reports for a classifier, from its probabilities.

Inputs: probabilities (N, K) (rows sum to 1), integer labels (N,). Definitions:
- accuracy, top-k accuracy, NLL = mean -log p(label) (probabilities clipped at 1e-12);
- per-class precision, recall, F1 and support with macro, micro and weighted averages
  (scikit-learn's precision_recall_fscore_support, zero_division=0: a class never predicted
  has precision 0); the confusion matrix (rows: true class, columns: predicted);
- one-vs-rest AUC-ROC per class (scikit-learn's roc_auc_score); a class absent from the labels
  (or present everywhere) has no AUC (NaN) and the macro AUC averages the classes that have one;
- calibration: expected calibration error and maximum calibration error on 15 equal-width bins
  of the top-label confidence (Guo et al. 2017; bins (b/15, (b+1)/15]), and the Brier score
  in its original multi-class form, mean over examples of sum_k (p_k - 1[y = k])^2 (Brier 1950;
  0 is perfect, 2 is the worst).
"""
import math

import numpy as np
from sklearn import metrics as skm

BINS = 15


def calibration_bins(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> dict:
  """Per bin: count, mean confidence and accuracy of the examples whose top-label confidence
  falls in (b/bins, (b+1)/bins]."""
  confidence = probs.max(axis=1)
  correct = (probs.argmax(axis=1) == labels).astype(np.float64)
  index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
  count = np.bincount(index, minlength=bins).astype(np.float64)
  with np.errstate(invalid='ignore', divide='ignore'):
    mean_confidence = np.bincount(index, confidence, bins) / count
    accuracy = np.bincount(index, correct, bins) / count
  return {'count': count, 'confidence': mean_confidence, 'accuracy': accuracy,
          'edges': np.linspace(0, 1, bins + 1)}


def calibration(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> dict:
  """ECE, MCE (15 equal-width top-label bins) and the multi-class Brier score."""
  b = calibration_bins(probs, labels, bins)
  used = b['count'] > 0
  gaps = np.abs(b['accuracy'][used] - b['confidence'][used])
  onehot = np.eye(probs.shape[1])[labels]
  return {'ece': float(np.sum(b['count'][used] / b['count'].sum() * gaps)),
          'mce': float(gaps.max()) if gaps.size else 0.0,
          'brier': float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))}


def auc_roc(probs: np.ndarray, labels: np.ndarray) -> tuple[list[float], float]:
  """One-vs-rest AUC per class (NaN where a class is absent or everywhere) and their mean over
  the classes that have one."""
  per_class = []
  for k in range(probs.shape[1]):
    positive = labels == k
    if positive.all() or not positive.any():
      per_class.append(math.nan)
    else:
      per_class.append(float(skm.roc_auc_score(positive, probs[:, k])))
  defined = [a for a in per_class if not math.isnan(a)]
  return per_class, (float(np.mean(defined)) if defined else math.nan)


def classification_report(probs: np.ndarray, labels: np.ndarray, class_names=None,
                          top_k: int = 5) -> dict:
  """Every number above, as a JSON-able dict."""
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels, np.int64)
  n, k = probs.shape
  names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
  predicted = probs.argmax(axis=1)
  out = {'num_examples': int(n),
         'accuracy': float(np.mean(predicted == labels)),
         'nll': float(np.mean(-np.log(np.clip(probs[np.arange(n), labels], 1e-12, 1.0))))}
  if 0 < top_k < k:
    top = np.argsort(-probs, axis=1)[:, :top_k]
    out[f'top{top_k}_accuracy'] = float(np.mean(np.any(top == labels[:, None], axis=1)))
  classes = list(range(k))
  precision, recall, f1, support = skm.precision_recall_fscore_support(
      labels, predicted, labels=classes, zero_division=0)
  out['per_class'] = {names[c]: {'precision': float(precision[c]), 'recall': float(recall[c]),
                                 'f1': float(f1[c]), 'support': int(support[c])} for c in classes}
  for average in ('macro', 'micro', 'weighted'):
    p, r, f, _ = skm.precision_recall_fscore_support(labels, predicted, labels=classes,
                                                     average=average, zero_division=0)
    out[average] = {'precision': float(p), 'recall': float(r), 'f1': float(f)}
  out['confusion_matrix'] = skm.confusion_matrix(labels, predicted, labels=classes).tolist()
  per_class_auc, macro_auc = auc_roc(probs, labels)
  out['auc_roc'] = {'per_class': dict(zip(names, per_class_auc)), 'macro': macro_auc}
  out.update(calibration(probs, labels))
  return out


def headline(report: dict) -> dict:
  """The few numbers a table shows: accuracy, macro F1, macro AUC, NLL, ECE, Brier."""
  return {'accuracy': report['accuracy'], 'macro_f1': report['macro']['f1'],
          'macro_auc': report['auc_roc']['macro'], 'nll': report['nll'], 'ece': report['ece'],
          'brier': report['brier']}
