"""Subgroup audit: does the classifier do as well for every group of examples?

For a grouping (one group label per example, e.g. MNIST's writer population), per group:
accuracy, and per class the false-negative rate FNR_c = P(prediction != c | label = c) and the
false-positive rate FPR_c = P(prediction = c | label != c). The point estimates come from
fairlearn's MetricFrame; the largest gap between groups of each metric (max - min over
groups) gets a 95% percentile-bootstrap confidence interval (Efron & Tibshirani 1993):
examples are resampled with replacement within each group (group sizes fixed), B times
(seeded), and the gap recomputed on each resample with NumPy.
"""
import numpy as np

from research.errors import ConfigError


def _rates(labels, predicted, num_classes):
  """accuracy, FNR per class, FPR per class of one group's (labels, predictions)."""
  accuracy = float(np.mean(labels == predicted)) if len(labels) else np.nan
  fnr, fpr = [], []
  for c in range(num_classes):
    positive = labels == c
    fnr.append(float(np.mean(predicted[positive] != c)) if positive.any() else np.nan)
    fpr.append(float(np.mean(predicted[~positive] == c)) if (~positive).any() else np.nan)
  return accuracy, fnr, fpr


def metric_names(num_classes: int) -> list[str]:
  return (['accuracy'] + [f'fnr_{c}' for c in range(num_classes)] +
          [f'fpr_{c}' for c in range(num_classes)])


def point_estimates(labels, predicted, groups, num_classes: int) -> dict:
  """{group: {metric: value}} through fairlearn's MetricFrame."""
  from fairlearn.metrics import MetricFrame

  def fnr(c):
    return lambda y, p: float(np.mean(p[y == c] != c)) if np.any(y == c) else np.nan

  def fpr(c):
    return lambda y, p: float(np.mean(p[y != c] == c)) if np.any(y != c) else np.nan

  functions = {'accuracy': lambda y, p: float(np.mean(y == p))}
  functions.update({f'fnr_{c}': fnr(c) for c in range(num_classes)})
  functions.update({f'fpr_{c}': fpr(c) for c in range(num_classes)})
  frame = MetricFrame(metrics=functions, y_true=np.asarray(labels), y_pred=np.asarray(predicted),
                      sensitive_features=np.asarray(groups))
  by_group = frame.by_group
  return {str(g): {m: float(by_group.loc[g, m]) for m in functions} for g in by_group.index}


def _gaps(labels, predicted, group_index, num_groups, num_classes):
  values = np.array([np.concatenate([[a], f, p]) for a, f, p in
                     (_rates(labels[group_index == g], predicted[group_index == g], num_classes)
                      for g in range(num_groups))])
  with np.errstate(all='ignore'):
    return np.nanmax(values, axis=0) - np.nanmin(values, axis=0)


def audit(labels, predicted, groups, num_classes: int, bootstrap: int = 1000,
          seed: int = 0) -> dict:
  """Per-group metrics and, per metric, the largest gap between groups with its 95% CI."""
  labels, predicted, groups = (np.asarray(a) for a in (labels, predicted, groups))
  names = sorted(set(groups.tolist()), key=str)
  if len(names) < 2:
    raise ConfigError(f'a subgroup audit needs at least two groups; the grouping has {names}')
  index_of = {g: i for i, g in enumerate(names)}
  group_index = np.array([index_of[g] for g in groups.tolist()])
  by_group = point_estimates(labels, predicted, groups, num_classes)
  metrics = metric_names(num_classes)
  gap = _gaps(labels, predicted, group_index, len(names), num_classes)
  rng = np.random.default_rng(seed)
  members = [np.flatnonzero(group_index == g) for g in range(len(names))]
  samples = np.empty((bootstrap, len(metrics)))
  for b in range(bootstrap):
    rows = np.concatenate([rng.choice(m, size=len(m), replace=True) for m in members])
    samples[b] = _gaps(labels[rows], predicted[rows], group_index[rows], len(names), num_classes)
  low, high = np.nanpercentile(samples, [2.5, 97.5], axis=0)
  return {'groups': {str(n): int(len(m)) for n, m in zip(names, members)},
          'by_group': by_group,
          'gap': {m: {'value': float(gap[i]), 'ci95': [float(low[i]), float(high[i])]}
                  for i, m in enumerate(metrics)},
          'bootstrap': bootstrap}
